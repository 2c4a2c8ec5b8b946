"""MultiHeadAttention against flax.linen.MultiHeadDotProductAttention and itself."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import MultiHeadAttention
from attention import combine_masks
from attention import make_causal_mask
from attention import make_padding_mask

B, T, S, D = 2, 6, 5, 16


def inputs(seed, length=T, features=D):
  return jax.random.normal(jax.random.key(seed), (B, length, features))


def flax_params(seed, x, kv=None, **kwargs):
  module = nn.MultiHeadDotProductAttention(**kwargs)
  return module, module.init(jax.random.key(seed), x, kv)


@pytest.mark.parametrize('normalize_qk', [False, True])
def test_parameter_tree_identical_to_flax(normalize_qk):
  x = inputs(0)
  _, want = flax_params(1, x, num_heads=4, qkv_features=8, out_features=12,
                        normalize_qk=normalize_qk)
  got = MultiHeadAttention(num_heads=4, qkv_features=8, out_features=12,
                           normalize_qk=normalize_qk).init(
                               jax.random.key(1), x)
  shapes = lambda tree: jax.tree.map(jnp.shape, tree)
  assert shapes(got) == shapes(want)
  assert shapes(got)['params']['key']['kernel'] == (D, 4, 2)
  assert shapes(got)['params']['out']['kernel'] == (4, 2, 12)


@pytest.mark.parametrize('case', ['self', 'cross', 'padding', 'causal',
                                  'normalize_qk'])
def test_flax_parameters_load_and_give_the_same_outputs(case):
  x = inputs(2)
  kv = inputs(3, S, 10) if case == 'cross' else None
  kwargs = dict(num_heads=4, normalize_qk=case == 'normalize_qk')
  flax_module, variables = flax_params(4, x, kv, **kwargs)
  ours = MultiHeadAttention(**kwargs)
  flax_mask, our_kwargs = None, {}
  if case == 'padding':
    lengths = np.array([6, 3])
    flax_mask = nn.make_attention_mask(np.arange(T)[None] < lengths[:, None],
                                       np.arange(T)[None] < lengths[:, None])
    # A padded query row attends to nothing: zero in ours, an average in
    # Flax's; compare the real rows and check ours are zero.
    our_kwargs['mask'] = combine_masks(
        make_padding_mask(lengths, T), make_padding_mask(lengths, T,
                                                         axis='query'))
  if case == 'causal':
    flax_mask = nn.make_causal_mask(jnp.ones((B, T)))
    our_kwargs['is_causal'] = True
  want = flax_module.apply(variables, x, kv, mask=flax_mask)
  got = ours.apply(variables, x, kv, **our_kwargs)
  if case == 'padding':
    # Padded query rows (batch 1, rows 3:) attend to nothing: Flax averages
    # the values there, this package gives zeros (tested below). Compare the
    # rows that hold real tokens.
    got = np.concatenate([got[0], got[1, :3]])
    want = np.concatenate([want[0], want[1, :3]])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_padded_query_rows_are_exactly_the_output_bias():
  x = inputs(5)
  lengths = np.array([6, 3])
  mask = combine_masks(make_padding_mask(lengths, T),
                       make_padding_mask(lengths, T, axis='query'))
  module = MultiHeadAttention(num_heads=2)
  variables = module.init(jax.random.key(6), x)
  out = module.apply(variables, x, mask=mask)
  bias = variables['params']['out']['bias']
  np.testing.assert_array_equal(out[1, 3:], np.broadcast_to(bias, (3, D)))
  # Real rows agree with Flax, where padding keys are masked the same way.
  flax_out = nn.MultiHeadDotProductAttention(num_heads=2).apply(
      variables, x, mask=nn.make_attention_mask(
          np.arange(T)[None] < lengths[:, None],
          np.arange(T)[None] < lengths[:, None]))
  np.testing.assert_allclose(out[1, :3], flax_out[1, :3], rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('num_kv_heads', [2, 1])
def test_grouped_query_heads(num_kv_heads):
  x = inputs(7)
  module = MultiHeadAttention(num_heads=4, num_kv_heads=num_kv_heads)
  variables = module.init(jax.random.key(8), x)
  params = variables['params']
  assert params['key']['kernel'].shape == (D, num_kv_heads, 4)
  assert params['value']['bias'].shape == (num_kv_heads, 4)
  assert params['query']['kernel'].shape == (D, 4, 4)
  # Independent check: the same model as multi-head attention whose key and
  # value heads are repeated explicitly for each query-head group.
  repeat = lambda a: np.repeat(a, 4 // num_kv_heads, axis=-2)
  full = jax.tree.map(lambda a: a, dict(params))
  for name in ('key', 'value'):
    full[name] = {'kernel': repeat(params[name]['kernel']),
                  'bias': repeat(params[name]['bias'])}
  want = MultiHeadAttention(num_heads=4).apply({'params': full}, x,
                                               is_causal=True)
  got = module.apply(variables, x, is_causal=True)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('num_kv_heads, prefill, rotary_base',
                         [(None, 3, None), (2, 1, None), (1, 5, None),
                          (2, 2, 10_000.0)])
def test_decode_with_prefill_equals_full_causal_attention(num_kv_heads,
                                                          prefill,
                                                          rotary_base):
  length = 7
  x = inputs(9, length)
  full = MultiHeadAttention(num_heads=4, num_kv_heads=num_kv_heads,
                            rotary_base=rotary_base)
  variables = full.init(jax.random.key(10), x)
  want, want_weights = full.apply(variables, x, is_causal=True,
                                  return_weights=True)

  decoder = MultiHeadAttention(num_heads=4, num_kv_heads=num_kv_heads,
                               rotary_base=rotary_base, decode=True)
  cache = decoder.init(jax.random.key(0), x)['cache']
  assert cache['cached_key'].shape == (B, length, num_kv_heads or 4, 4)
  step = jax.jit(lambda cache, x_t: decoder.apply(
      {'params': variables['params'], 'cache': cache}, x_t,
      return_weights=True, mutable=['cache']))
  outs, weights = [], []
  (out, w), state = step(cache, x[:, :prefill])
  outs.append(out), weights.append(w)
  for t in range(prefill, length):
    (out, w), state = step(state['cache'], x[:, t:t + 1])
    outs.append(out), weights.append(w)
  assert int(state['cache']['cache_index']) == length
  np.testing.assert_allclose(np.concatenate(outs, 1), want, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(np.concatenate(weights, 2), want_weights,
                             rtol=1e-5, atol=1e-7)


def test_rotary_layer_keeps_only_relative_positions():
  # Scores q_p.k_q depend on p - q only: shifting every position changes the
  # rotated vectors but not one attention output.
  module = MultiHeadAttention(num_heads=2, rotary_base=10_000.0)
  xs = inputs(21)
  variables = module.init(jax.random.key(22), xs)
  out = module.apply(variables, xs, is_causal=True)
  shifted = module.apply(variables, xs, is_causal=True,
                         positions=np.arange(T) + 1000)
  np.testing.assert_allclose(shifted, out, rtol=1e-4, atol=1e-5)
  # And the positions do matter: without them the layer is another function.
  plain = MultiHeadAttention(num_heads=2).apply(variables, xs, is_causal=True)
  assert not np.allclose(plain, out, atol=1e-3)
  with pytest.raises(ValueError, match='positions are only used with '
                     'rotary_base set'):
    MultiHeadAttention(num_heads=2).apply(variables, xs, positions=np.arange(T))


def test_decode_cache_overflow_is_a_clear_error():
  x = inputs(11, 4)
  decoder = MultiHeadAttention(num_heads=2, decode=True)
  variables = decoder.init(jax.random.key(0), x)
  _, state = decoder.apply(variables, x[:, :3], mutable=['cache'])
  with pytest.raises(ValueError, match='holds 3 of 4 positions and cannot '
                     'take 2 more'):
    decoder.apply({'params': variables['params'], **state}, x[:, :2],
                  mutable=['cache'])


def test_dropout_only_when_not_deterministic_and_reproducible():
  x = inputs(12)
  module = MultiHeadAttention(num_heads=2, dropout_rate=0.5)
  variables = module.init(jax.random.key(13), x)
  plain = MultiHeadAttention(num_heads=2).apply(variables, x)
  np.testing.assert_array_equal(module.apply(variables, x), plain)
  drop = lambda seed: module.apply(variables, x, deterministic=False,
                                   rngs={'dropout': jax.random.key(seed)})
  np.testing.assert_array_equal(drop(1), drop(1))
  assert not np.allclose(drop(1), plain) and not np.allclose(drop(1), drop(2))


def test_bfloat16_module_is_finite_with_masks():
  x = inputs(14).astype(jnp.bfloat16) * 20
  module = MultiHeadAttention(num_heads=2, dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(15), x)
  mask = combine_masks(make_padding_mask(np.array([6, 0]), T),
                       make_causal_mask(T))
  out = module.apply(variables, x, mask=mask)
  assert out.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(out, np.float32)))


@pytest.mark.parametrize('module, args, message', [
    (MultiHeadAttention(num_heads=3), (inputs(0),),
     r'qkv_features=16 must be divisible by num_heads=3'),
    (MultiHeadAttention(num_heads=4, num_kv_heads=3), (inputs(0),),
     r'num_heads=4 must be divisible by num_kv_heads=3'),
    (MultiHeadAttention(num_heads=2, dropout_rate=1.5), (inputs(0),),
     r'dropout_rate must be in \[0, 1\)'),
    (MultiHeadAttention(num_heads=2), (jnp.ones((B, D)),),
     r'inputs_q must be \[B, length, features\]'),
    (MultiHeadAttention(num_heads=2, decode=True), (inputs(0), inputs(1)),
     'for cross-attention'),
    (MultiHeadAttention(num_heads=2, implementation='fast'), (inputs(0),),
     "unknown implementation 'fast'"),
    (MultiHeadAttention(num_heads=2, rotary_base=1e4), (inputs(0), inputs(1)),
     'rotary_base applies to self-attention'),
    (MultiHeadAttention(num_heads=4, qkv_features=12, rotary_base=1e4),
     (inputs(0),), r'head dim must be even to form pairs, got H=3'),
])
def test_bad_input_is_a_clear_value_error(module, args, message):
  with pytest.raises(ValueError, match=message):
    module.init(jax.random.key(0), *args)


def test_mask_that_does_not_broadcast_is_a_clear_value_error():
  module = MultiHeadAttention(num_heads=2)
  with pytest.raises(ValueError, match=r'mask of shape \(2, 1, 5, 5\)'):
    module.init(jax.random.key(0), inputs(0), mask=jnp.ones((B, 1, 5, 5),
                                                            bool))
