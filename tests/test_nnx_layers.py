"""attention.nnx: the layers as native Flax NNX modules.

Equal to the linen layers on converted weights (both ways), loading
flax.nnx.MultiHeadAttention and flax.linen.MultiHeadDotProductAttention
weights, the decode cache as nnx.Cache state, and the NNX idioms (jit, grad,
Optimizer, split/merge, state filters, vmap/scan over layers, sharding
annotations on a 4-device mesh).
"""

import os
import subprocess
import sys
import textwrap

import flax.linen as linen
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import attention
from attention import nnx as attn
from conftest import ROOT

B, T, S, D = 2, 5, 7, 8


def _inputs():
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  y = jax.random.normal(jax.random.key(1), (B, S, 6))
  # Example 1 attends to its first 3 keys; query row 0 of example 0 to none.
  mask = np.ones((B, 1, T, S), bool)
  mask[1, :, :, 3:] = False
  mask[0, :, 0, :] = False
  return x, y, mask


MHA_SETTINGS = {
    'plain': {},
    'gqa_qknorm': {'num_kv_heads': 1, 'normalize_qk': True},
    'rope': {'rotary_base': 10_000.0, 'qkv_features': 16, 'out_features': 4},
}


@pytest.mark.parametrize('setting', sorted(MHA_SETTINGS))
def test_multihead_equals_linen_on_converted_weights_both_ways(setting):
  kwargs = MHA_SETTINGS[setting]
  x, y, mask = _inputs()
  cross = 'rotary_base' not in kwargs
  layer = attn.MultiHeadAttention(
      2, D, in_kv_features=6 if cross else None, rngs=nnx.Rngs(0), **kwargs)
  linen_layer = attention.MultiHeadAttention(num_heads=2, **kwargs)
  kv = y if cross else None
  # NNX -> linen.
  params = attn.linen_params(layer)
  got, got_w = layer(x, kv, mask=mask if cross else None, is_causal=not cross,
                     return_weights=True)
  want, want_w = linen_layer.apply(
      {'params': params}, x, kv, mask=mask if cross else None,
      is_causal=not cross, return_weights=True)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got_w, want_w, rtol=1e-6, atol=1e-6)
  if cross:  # the fully masked query row: zero weights, the bias only
    assert np.all(np.asarray(got_w)[0, :, 0] == 0)
  # linen -> NNX: fresh linen weights loaded into another NNX layer.
  fresh = linen_layer.init(jax.random.key(5), x, kv)['params']
  other = attn.MultiHeadAttention(
      2, D, in_kv_features=6 if cross else None, rngs=nnx.Rngs(9), **kwargs)
  attn.load_linen_params(other, fresh)
  np.testing.assert_allclose(
      other(x, kv, is_causal=not cross),
      linen_layer.apply({'params': fresh}, x, kv, is_causal=not cross),
      rtol=1e-6, atol=1e-6)


def test_implementation_is_passed_to_dot_product_attention():
  x, _, _ = _inputs()
  layer = attn.MultiHeadAttention(4, D, num_kv_heads=2, rngs=nnx.Rngs(0))
  chunked = attn.MultiHeadAttention(4, D, num_kv_heads=2,
                                    implementation='chunked', rngs=nnx.Rngs(1))
  attn.load_linen_params(chunked, attn.linen_params(layer))
  np.testing.assert_allclose(chunked(x, is_causal=True),
                             layer(x, is_causal=True), rtol=1e-5, atol=1e-6)
  bad = attn.MultiHeadAttention(2, D, implementation='fast', rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="implementation"):
    bad(x)


def test_flax_nnx_multihead_weights_load_into_ours():
  x, _, mask = _inputs()
  theirs = nnx.MultiHeadAttention(num_heads=2, in_features=D, qkv_features=16,
                                  decode=False, rngs=nnx.Rngs(3))
  ours = attn.MultiHeadAttention(2, D, 16, rngs=nnx.Rngs(4))
  attn.load_linen_params(ours, nnx.to_pure_dict(nnx.state(theirs,
                                                          nnx.Param)))
  mask = mask[:, :, :, :T]
  got, want = ours(x, mask=mask), theirs(x, mask=mask)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[0, 1:], want[0, 1:], rtol=1e-5, atol=1e-6)
  # Query 0 of example 0 may attend to nothing: Flax averages every value,
  # ours attends to nothing (zero weights; the output is the out bias, 0).
  assert np.all(np.asarray(got[0, 0]) == 0)
  assert not np.allclose(want[0, 0], 0)


def test_flax_linen_multihead_weights_load_into_ours():
  x, y, _ = _inputs()
  theirs = linen.MultiHeadDotProductAttention(num_heads=2)
  params = theirs.init(jax.random.key(2), x, y)['params']
  ours = attn.MultiHeadAttention(2, D, in_kv_features=6, rngs=nnx.Rngs(0))
  attn.load_linen_params(ours, params)
  np.testing.assert_allclose(ours(x, y), theirs.apply({'params': params}, x, y),
                             rtol=1e-5, atol=1e-6)


def test_loading_weights_of_another_shape_names_the_parameter():
  layer = attn.MultiHeadAttention(2, D, rngs=nnx.Rngs(0))
  params = attn.linen_params(layer)
  params['out']['kernel'] = np.zeros((2, 4, 3))
  with pytest.raises(ValueError, match=r"'out/kernel' has shape \(2, 4, 3\), "
                     r'the layer \(2, 4, 8\)'):
    attn.load_linen_params(layer, params)
  del params['out']
  with pytest.raises(ValueError, match="have no 'out/bias'"):
    attn.load_linen_params(layer, params)


def test_decode_cache_prefill_then_tokens_equals_full_causal_attention():
  x = jax.random.normal(jax.random.key(7), (B, 6, D))
  layer = attn.MultiHeadAttention(4, D, num_kv_heads=2, rotary_base=100.0,
                                  decode=True, rngs=nnx.Rngs(0))
  full = attn.MultiHeadAttention(4, D, num_kv_heads=2, rotary_base=100.0,
                                 rngs=nnx.Rngs(1))
  attn.load_linen_params(full, attn.linen_params(layer))
  want = full(x, is_causal=True)
  with pytest.raises(ValueError, match='cache is not initialised; call '
                     r'init_cache\(batch_size, max_length\) first'):
    layer(x[:, :3])
  layer.init_cache(B, 6)
  parts = [layer(x[:, :3]), layer(x[:, 3:4]), layer(x[:, 4:5]),
           layer(x[:, 5:6])]
  np.testing.assert_allclose(jnp.concatenate(parts, axis=1), want,
                             rtol=1e-5, atol=1e-6)
  assert int(layer.cache_index[...]) == 6
  with pytest.raises(ValueError, match='holds 6 of 6 positions and cannot '
                     'take 1 more'):
    layer(x[:, :1])
  # The cache is nnx.Cache state, apart from the parameters.
  assert set(nnx.to_pure_dict(nnx.state(layer, nnx.Cache))) == {
      'cached_key', 'cached_value', 'cache_index'}


@pytest.mark.parametrize('kwargs, message', [
    ({'num_heads': 3, 'in_features': 8}, 'qkv_features=8 must be divisible '
     'by num_heads=3'),
    ({'num_heads': 4, 'in_features': 8, 'num_kv_heads': 3},
     'num_heads=4 must be divisible by num_kv_heads=3'),
    ({'num_heads': 2, 'in_features': 0}, 'input feature sizes must be '
     'positive ints'),
    ({'num_heads': 2, 'in_features': 8, 'dropout_rate': 1.0},
     r'dropout_rate must be in \[0, 1\)'),
])
def test_bad_construction_is_a_clear_error(kwargs, message):
  with pytest.raises(ValueError, match=message):
    attn.MultiHeadAttention(rngs=nnx.Rngs(0), **kwargs)


def test_inputs_of_another_width_are_a_clear_error():
  layer = attn.MultiHeadAttention(2, D, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='inputs_q has 6 features, but the '
                     'layer was built for 8'):
    layer(jnp.ones((B, T, 6)))
  with pytest.raises(ValueError, match='init_cache needs decode=True'):
    layer.init_cache(B, T)


def test_dropout_draws_from_the_layers_rngs():
  x, _, _ = _inputs()
  layer = attn.MultiHeadAttention(2, D, dropout_rate=0.5, rngs=nnx.Rngs(0))
  a, b = layer(x, deterministic=False), layer(x, deterministic=False)
  assert not np.allclose(a, b)  # the stream moved on
  np.testing.assert_array_equal(layer(x), layer(x))  # deterministic default
  c = layer(x, deterministic=False, rngs=nnx.Rngs(dropout=3))
  d = layer(x, deterministic=False, rngs=nnx.Rngs(dropout=3))
  np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize('normalize', [False, True])
def test_additive_equals_linen_both_ways(normalize):
  q = jax.random.normal(jax.random.key(0), (B, T, 4))
  keys = jax.random.normal(jax.random.key(1), (B, S, 6))
  mask = np.arange(S)[None] < np.array([S, 0])[:, None]  # example 1: none
  layer = attn.BahdanauAttention(4, 6, 5, normalize=normalize,
                                 rngs=nnx.Rngs(0))
  linen_layer = attention.BahdanauAttention(features=5, normalize=normalize)
  params = attn.linen_params(layer)
  context, weights = layer(q, keys, mask=mask)
  want_c, want_w = linen_layer.apply({'params': params}, q, keys, mask=mask)
  np.testing.assert_allclose(context, want_c, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(weights, want_w, rtol=1e-6, atol=1e-6)
  assert np.all(np.asarray(weights)[1] == 0) and np.all(
      np.asarray(context)[1] == 0)
  # One decoder step with the keys projected once.
  step_c, _ = layer(q[:, 0], keys, projected_keys=layer.project_keys(keys))
  np.testing.assert_allclose(step_c, layer(q, keys)[0][:, 0], rtol=1e-6,
                             atol=1e-6)
  fresh = linen_layer.init(jax.random.key(3), q, keys)['params']
  attn.load_linen_params(layer, fresh)
  np.testing.assert_allclose(layer(q, keys)[0],
                             linen_layer.apply({'params': fresh}, q, keys)[0],
                             rtol=1e-6, atol=1e-6)


def test_multiplicative_equals_linen():
  q = jax.random.normal(jax.random.key(0), (B, 4))
  keys = jax.random.normal(jax.random.key(1), (B, S, 6))
  layer = attn.LuongAttention(4, 6, use_scale=True, rngs=nnx.Rngs(0))
  params = attn.linen_params(layer)
  assert set(params) == {'kernel', 'scale'}
  got = layer(q, keys)
  want = attention.LuongAttention(use_scale=True).apply({'params': params}, q,
                                                        keys)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match='key_features must be a positive int'):
    attn.LuongAttention(4, 0, rngs=nnx.Rngs(0))


class Pool(nnx.Module):
  """Self-attention, then additive pooling: a tiny NNX classifier."""

  def __init__(self, rngs):
    self.mha = attn.MultiHeadAttention(2, D, normalize_qk=True, rngs=rngs)
    self.pool = attn.AdditiveAttention(D, D, 6, rngs=rngs)
    self.query = nnx.Param(jnp.ones((D,)))

  def __call__(self, x):
    h = self.mha(x, is_causal=True)
    query = jnp.broadcast_to(self.query[...], (x.shape[0], D))
    return self.pool(query, h)[0].sum(-1)


def test_nnx_idioms_jit_grad_optimizer_split_merge_and_state_filters():
  x = jax.random.normal(jax.random.key(0), (4, T, D))
  target = jnp.array([1.0, -1.0, 0.5, 0.0])
  model = Pool(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  def loss_fn(model):
    return jnp.mean((model(x) - target) ** 2)

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(30)]
  assert losses[-1] < 0.5 * losses[0]
  grads = nnx.grad(loss_fn)(model)
  assert set(nnx.to_pure_dict(grads)) == {'mha', 'pool', 'query'}
  # split / merge round trip, and a Param-only state.
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  assert not jax.tree.leaves(rest)
  clone = nnx.merge(graphdef, params)
  np.testing.assert_array_equal(clone(x), model(x))
  assert nnx.to_pure_dict(params)['mha']['query_ln']['scale'].shape == (4,)


def test_a_stack_of_layers_with_vmap_and_scan():
  x = jax.random.normal(jax.random.key(0), (B, T, D))

  @nnx.split_rngs(splits=3)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def make(rngs):
    return attn.MultiHeadAttention(2, D, rngs=rngs)

  stack = make(nnx.Rngs(0))
  assert stack.query.kernel[...].shape == (3, D, 2, 4)

  @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
  def apply(h, layer):
    return h + layer(h, is_causal=True)

  got = apply(x, stack)
  want = x
  for i in range(3):  # the same layers, one by one
    one = attn.MultiHeadAttention(2, D, rngs=nnx.Rngs(0))
    attn.load_linen_params(one, jax.tree.map(lambda a, i=i: a[i],
                                             attn.linen_params(stack)))
    want = want + one(want, is_causal=True)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


SHARDED = textwrap.dedent('''
    import jax, jax.numpy as jnp
    from flax import nnx
    from jax.sharding import PartitionSpec as P
    from attention import nnx as attn

    mesh = jax.make_mesh((2, 2), ('data', 'model'))
    init = nnx.with_partitioning(nnx.initializers.lecun_normal(),
                                 (None, 'model', None))
    with jax.set_mesh(mesh):
      layer = attn.MultiHeadAttention(4, 8, kernel_init=init,
                                      rngs=nnx.Rngs(0))
      state = nnx.state(layer)
      specs = nnx.get_partition_spec(state)
      nnx.update(layer, jax.device_put(state,
                                       nnx.get_named_sharding(state, mesh)))
      x = jax.device_put(jnp.ones((4, 5, 8)),
                         jax.NamedSharding(mesh, P('data')))
      out = nnx.jit(lambda m, x: m(x, is_causal=True))(layer, x)
    kernel = layer.query.kernel[...]
    print('spec', specs['query']['kernel'].get_value())
    print('shards', len(kernel.addressable_shards),
          kernel.addressable_shards[0].data.shape)
    print('out', out.shape, out.sharding.spec)
''')


def test_sharding_annotations_on_a_four_device_mesh():
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  out = subprocess.run([sys.executable, '-c', SHARDED], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  assert "spec P(None, 'model', None)" in lines
  # query kernel [8, 4, 2] split over 'model' on its heads: [8, 2, 2] each.
  assert 'shards 4 (8, 2, 2)' in lines
  assert "out (4, 5, 8) P('data', None, None)" in lines  # batch split
