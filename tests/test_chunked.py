"""The chunked (flash-style) attention path against the 'xla' path.

Small shapes with small blocks, so every case runs several query and key
blocks, ragged diagonal tiles and edge blocks shorter than the block size.
No timing assertions here: speed is measured by benchmarks/attention_speed.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import chunked
from attention import dot_product
from attention import dot_product_attention
from attention import make_padding_mask
from attention.chunked import blocks
from attention.chunked import flash

SMALL = chunked.BlockSizes(q=8, k=16, q_bwd=16, k_bwd=8)


def inputs(seed, B, T, S, N, K, H, dtype=jnp.float32):
  kq, kk, kv, kc = jax.random.split(jax.random.key(seed), 4)
  return (jax.random.normal(kq, (B, T, N, H), dtype),
          jax.random.normal(kk, (B, S, K, H), dtype),
          jax.random.normal(kv, (B, S, K, H), dtype),
          jax.random.normal(kc, (B, T, N, H), jnp.float32))


def make_mask(kind, seed, B, T, S, N):
  """A mask of the given kind; 'per_head' and 'rows' mask whole query rows."""
  rng = np.random.default_rng(seed)
  if kind is None:
    return None
  if kind == 'padding':  # [B, 1, 1, S]
    return make_padding_mask(jnp.asarray(([S, max(1, S // 3)] * B)[:B]), S)
  if kind == 'per_head':  # [B, N, T, S]
    mask = rng.random((B, N, T, S)) < 0.7
    mask[:, 0, [0, T // 2, T - 1]] = False  # First, middle and last block.
    return jnp.asarray(mask)
  if kind == 'rows':  # [B, 1, T, S]
    mask = rng.random((B, 1, T, S)) < 0.8
    mask[:, :, [0, T - 1]] = False
    mask[-1] = False  # A whole sequence.
    return jnp.asarray(mask)
  raise ValueError(kind)


def make_bias(kind, seed, B, T, S, N):
  if kind is None:
    return None
  shape = {'full': (B, N, T, S), 'heads': (1, N, T, S), 'keys': (B, 1, 1, S)}
  return jax.random.normal(jax.random.key(seed), shape[kind])


@functools.lru_cache(maxsize=None)
def value_and_grads(impl, causal, has_bias, schedule, blocks=SMALL,
                    chains=None):
  """A jitted (loss, (out, grads)) for one implementation, shared by tests."""

  def loss(q, k, v, bias, mask, cotangent):
    if impl == 'xla':
      out = dot_product_attention(q, k, v, bias=bias, mask=mask,
                                  is_causal=causal, implementation='xla')
    else:
      out = chunked.chunked_attention(q, k, v, bias=bias, mask=mask,
                                      is_causal=causal, block_sizes=blocks,
                                      schedule=schedule, chains=chains)
    return jnp.sum(out.astype(jnp.float32) * cotangent), out

  argnums = (0, 1, 2, 3) if has_bias else (0, 1, 2)
  return jax.jit(jax.value_and_grad(loss, argnums, has_aux=True))


def assert_close(got, want, rtol):
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  assert np.all(np.isfinite(got))
  scale = max(float(np.max(np.abs(want))), 1e-6)
  np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=rtol)


CASES = [
    # (B, T, S, N, K, H, causal, mask, bias, schedule)
    (2, 21, 21, 4, 2, 8, True, 'padding', None, 'unrolled'),
    (1, 12, 29, 4, 1, 8, True, 'per_head', 'full', 'unrolled'),
    (2, 17, 24, 6, 3, 8, False, None, 'keys', 'loop'),
    (2, 27, 13, 2, 2, 8, True, 'rows', 'heads', 'loop'),
]


@pytest.mark.parametrize('B, T, S, N, K, H, causal, mask_kind, bias_kind, '
                         'schedule', CASES)
def test_values_and_gradients_equal_xla(B, T, S, N, K, H, causal, mask_kind,
                                        bias_kind, schedule):
  q, k, v, cotangent = inputs(T * S + N, B, T, S, N, K, H)
  mask = make_mask(mask_kind, T, B, T, S, N)
  bias = make_bias(bias_kind, S, B, T, S, N)
  has_bias = bias is not None
  (loss, out), grads = value_and_grads('chunked', causal, has_bias, schedule)(
      q, k, v, bias, mask, cotangent)
  (want_loss, want_out), want_grads = value_and_grads(
      'xla', causal, has_bias, None)(q, k, v, bias, mask, cotangent)
  assert out.shape == want_out.shape and out.dtype == q.dtype
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)
  assert_close(out, want_out, 1e-5)
  for got, want in zip(grads, want_grads):
    assert got.shape == want.shape
    assert_close(got, want, 1e-5)
  if mask_kind in ('per_head', 'rows'):
    # A query row whose keys are all masked: zero output, zero gradient.
    dead_BTN = ~np.broadcast_to(np.asarray(mask), (B, N, T, S)).any(-1)
    dead_BTN = dead_BTN.transpose(0, 2, 1)
    assert dead_BTN.any()
    np.testing.assert_array_equal(np.asarray(out)[dead_BTN], 0.0)
    np.testing.assert_array_equal(np.asarray(grads[0])[dead_BTN], 0.0)


@pytest.mark.parametrize('B, K, chains, bias_kind, schedule', [
    (1, 4, 2, 'heads', 'unrolled'),  # Split over key/value heads.
    (4, 1, 4, 'full', 'loop'),       # Over the batch.
    (3, 2, 4, 'keys', 'unrolled'),   # Neither divides by 4: 3 over the batch.
    (2, 2, 1, 'full', 'unrolled'),   # One computation.
])
def test_independent_chains_equal_xla(B, K, chains, bias_kind, schedule):
  T, S, N, H = 19, 23, 2 * K, 8
  q, k, v, cotangent = inputs(B * K + chains, B, T, S, N, K, H)
  mask = make_mask('per_head', chains, B, T, S, N)
  bias = make_bias(bias_kind, K, B, T, S, N)
  (_, out), grads = value_and_grads('chunked', True, True, schedule,
                                    chains=chains)(q, k, v, bias, mask,
                                                   cotangent)
  (_, want_out), want_grads = value_and_grads('xla', True, True, None)(
      q, k, v, bias, mask, cotangent)
  assert_close(out, want_out, 1e-5)
  for got, want in zip(grads, want_grads):
    assert got.shape == want.shape
    assert_close(got, want, 1e-5)


def test_chain_split():
  assert flash._chain_split(8, 8, 4) == (0, 4)
  assert flash._chain_split(1, 8, 4) == (1, 4)
  assert flash._chain_split(3, 2, 4) == (0, 3)
  assert flash._chain_split(1, 1, 4) == (0, 1)
  assert flash._chain_split(5, 7, 4) == (0, 1)  # Neither 2, 3 nor 4 divides.
  assert chunked.default_chains(8, 8, platform='cpu', cores=2) == 2
  assert chunked.default_chains(8, 8, platform='cpu', cores=16) == 4
  assert chunked.default_chains(1, 1, platform='cpu', cores=16) == 1
  assert chunked.default_chains(8, 8, 'loop', platform='cpu', cores=2) == 1
  assert chunked.default_chains(8, 8, platform='gpu', cores=2) == 1


@pytest.mark.parametrize('dtype', [jnp.bfloat16])
def test_half_precision_matches_xla_loosely(dtype):
  q, k, v, cotangent = inputs(1, 2, 21, 21, 4, 2, 8, dtype)
  mask = make_mask('padding', 0, 2, 21, 21, 4)
  (_, out), grads = value_and_grads('chunked', True, False, 'unrolled')(
      q, k, v, None, mask, cotangent)
  (_, want_out), want_grads = value_and_grads('xla', True, False, None)(
      q, k, v, None, mask, cotangent)
  assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
  assert_close(out, want_out, 2e-2)
  for got, want in zip(grads, want_grads):
    assert_close(got, want, 5e-2)


def test_default_blocks_and_dispatch_equal_xla():
  # The default block sizes and the public entry point, on a causal GQA case
  # long enough for several default blocks.
  q, k, v, cotangent = inputs(3, 1, 300, 300, 2, 1, 8)

  def loss(impl):
    return lambda q, k, v: jnp.sum(dot_product_attention(
        q, k, v, is_causal=True, implementation=impl) * cotangent)

  got = jax.jit(jax.value_and_grad(loss('chunked'), (0, 1, 2)))(q, k, v)
  want = jax.jit(jax.value_and_grad(loss('xla'), (0, 1, 2)))(q, k, v)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for g, w in zip(got[1], want[1]):
    assert_close(g, w, 1e-5)


@functools.lru_cache(maxsize=None)
def dropout_fn(rate, schedule):
  def attend(q, k, v, rng):
    return chunked.chunked_attention(q, k, v, is_causal=True, dropout_rate=rate,
                                     dropout_rng=rng, block_sizes=SMALL,
                                     schedule=schedule)
  return jax.jit(attend)


@pytest.mark.parametrize('schedule', ['unrolled', 'loop'])
def test_dropout_statistics(schedule):
  rate = 0.3
  B, T, S, N = 2, 16, 16, 4
  q, k, _, _ = inputs(4, B, T, S, N, N, 8)
  # Zero queries give uniform weights over the t + 1 visible keys (causal);
  # with one-hot values v[s] = e_s, out[t, s] = keep[t, s] / (t + 1) /
  # (1 - rate) reads out the keep-mask of every visible weight.
  values = jnp.broadcast_to(jnp.eye(S)[None, :, None, :], (B, S, N, S))
  out = dropout_fn(rate, schedule)(jnp.zeros_like(q), k, values,
                                   jax.random.key(5))
  scaled = np.asarray(out) * (np.arange(1, T + 1)[None, :, None, None]
                              * (1 - rate))
  visible = np.broadcast_to(np.tril(np.ones((T, S), bool))[None, :, None],
                            scaled.shape)
  np.testing.assert_allclose(np.unique(np.round(scaled[visible], 4)),
                             [0.0, 1.0], atol=1e-4)
  np.testing.assert_array_equal(scaled[~visible], 0.0)
  assert abs(np.mean(scaled[visible] > 0.5) - (1 - rate)) < 0.05  # 1088 draws
  # Same rng, same mask; another rng, another mask.
  again = dropout_fn(rate, schedule)(jnp.zeros_like(q), k, values,
                                     jax.random.key(5))
  other = dropout_fn(rate, schedule)(jnp.zeros_like(q), k, values,
                                     jax.random.key(6))
  np.testing.assert_array_equal(out, again)
  assert not np.allclose(out, other)


def test_dropout_backward_regenerates_the_forward_mask():
  # With dropout the loss is still linear in v, so <dL/dv, v> = L exactly when
  # the backward pass drops the same weights as the forward pass did; and a
  # central difference along q matches <dL/dq, direction>.
  B, T, S, N = 2, 16, 16, 4
  q, k, _, _ = inputs(6, B, T, S, N, N, 8)
  v = jax.random.normal(jax.random.key(7), (B, S, N, S))
  cotangent = jax.random.normal(jax.random.key(8), (B, T, N, S))
  attend = dropout_fn(0.4, 'unrolled')
  rng = jax.random.key(9)

  def loss(q, k, v):
    return jnp.sum(attend(q, k, v, rng) * cotangent)

  value, (dq, dv) = jax.jit(jax.value_and_grad(loss, (0, 2)))(q, k, v)
  np.testing.assert_allclose(jnp.sum(dv * v), value, rtol=1e-4)
  direction = jax.random.normal(jax.random.key(10), q.shape)
  eps = 1e-2
  numeric = (loss(q + eps * direction, k, v)
             - loss(q - eps * direction, k, v)) / (2 * eps)
  np.testing.assert_allclose(jnp.sum(dq * direction), numeric, rtol=2e-2,
                             atol=1e-3)


def test_return_weights_falls_back_to_xla():
  q, k, v, _ = inputs(9, 1, 12, 12, 2, 2, 8)
  out, weights = dot_product_attention(q, k, v, implementation='chunked',
                                       return_weights=True)
  want_out, want_weights = dot_product_attention(q, k, v, implementation='xla',
                                                 return_weights=True)
  np.testing.assert_array_equal(out, want_out)
  np.testing.assert_array_equal(weights, want_weights)


def test_none_picks_chunked_on_cpu_but_never_for_weights():
  q, k, v, _ = inputs(10, 1, 12, 12, 2, 2, 8)

  def best(q, k, v, dropout=False, return_weights=False):
    return dot_product.choose_implementation('cpu', dot_product.describe_call(
        q, k, v, dropout=dropout, return_weights=return_weights))

  # Short sequences stay on 'xla'; from T·S = 128² on, 'chunked'.
  assert best(q, k, v) == 'xla'
  long_q = jax.ShapeDtypeStruct((1, 128, 2, 8), jnp.float32)
  assert best(long_q, long_q, long_q) == 'chunked'
  assert best(long_q, long_q, long_q, return_weights=True) == 'xla'
  assert best(long_q, long_q, long_q, dropout=True, return_weights=True) == (
      'xla')


def test_no_full_matrix_in_memory():
  # The 'loop' schedule's buffers do not grow with T·S: at T = S = 4096 the
  # [T, S] float32 matrix alone would be 64 MiB.
  B, L, N, H = 1, 4096, 1, 16
  q = jax.ShapeDtypeStruct((B, L, N, H), jnp.float32)

  def loss(q, k, v):
    return jnp.sum(chunked.chunked_attention(
        q, k, v, is_causal=True, block_sizes=chunked.BlockSizes(256, 256, 256,
                                                                256),
        schedule='loop'))

  compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, q, q).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < L * L * 4 / 8, temp


def test_unrolled_program_transposes_its_operands_once():
  # Left to itself, XLA fuses the key transpose into every block's slice of
  # the keys (73 transposes in this forward, one per block read; see
  # blocks.materialized): written once, there are 3 (q, k, v).
  q = jax.ShapeDtypeStruct((2, 64, 4, 8), jnp.float32)
  forward = functools.partial(chunked.chunked_attention, chains=1,
                              block_sizes=SMALL, schedule='unrolled')
  hlo = jax.jit(forward).lower(q, q, q).compile().as_text()
  assert 0 < hlo.count(' transpose(') <= 4, hlo.count(' transpose(')
  assert 'conditional' in hlo
  # One block reads each operand once: nothing to write first.
  one_block = chunked.BlockSizes(64, 64, 64, 64)
  hlo = jax.jit(functools.partial(forward, block_sizes=one_block)).lower(
      q, q, q).compile().as_text()
  assert 'conditional' not in hlo


def test_written_once_operands_keep_their_values():
  # The always-true predicate holds for NaN too (the output stays NaN, as in
  # 'xla'), and under vmap, where the conditional becomes a select.
  x = jnp.arange(6.0).reshape(2, 3).at[0, 0].set(jnp.nan)
  (got,) = blocks.materialized(x)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(x))
  q, k, v, _ = inputs(5, 3, 12, 12, 2, 2, 8)
  attend = functools.partial(chunked.chunked_attention, block_sizes=SMALL,
                             schedule='unrolled', is_causal=True)
  got = jax.vmap(lambda q, k, v: attend(q[None], k[None], v[None])[0])(q, k, v)
  want = dot_product_attention(q, k, v, is_causal=True, implementation='xla')
  assert_close(got, want, 1e-5)


@pytest.mark.parametrize('kwargs, message', [
    (dict(block_q=0), 'block size q must be a positive int'),
    (dict(block_sizes=chunked.BlockSizes(8, 8, 8, -1)),
     'block size k_bwd must be a positive int'),
    (dict(schedule='fast'), "schedule must be 'unrolled', 'loop' or None"),
    (dict(chains=0), 'chains must be a positive int or None'),
    (dict(dropout_rate=0.1), 'needs a dropout_rng'),
    (dict(dropout_rate=1.0), r'dropout_rate must be in \[0, 1\)'),
])
def test_bad_arguments_are_clear_value_errors(kwargs, message):
  q, k, v, _ = inputs(11, 1, 8, 8, 2, 2, 8)
  with pytest.raises(ValueError, match=message):
    chunked.chunked_attention(q, k, v, **kwargs)


def test_bad_shapes_are_clear_value_errors():
  q, k, v, _ = inputs(12, 1, 8, 8, 4, 2, 8)
  with pytest.raises(ValueError, match='N divisible by K'):
    chunked.chunked_attention(q, k[:, :, :1].repeat(3, axis=2),
                              v[:, :, :1].repeat(3, axis=2))
  with pytest.raises(ValueError, match='rank-4'):
    chunked.chunked_attention(q[0], k, v)
