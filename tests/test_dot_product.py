"""dot_product_attention against jax.nn and a NumPy reference written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import combine_masks
from attention import dot_product_attention
from attention import make_causal_mask
from attention import make_padding_mask


def numpy_attention(q, k, v, mask=None, bias=None):
  """Float64 reference with K/V heads repeated; masked rows give zeros."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  B, T, N, H = q.shape
  S, K = k.shape[1], k.shape[2]
  k = np.repeat(k, N // K, axis=2)
  v = np.repeat(v, N // K, axis=2)
  logits = np.einsum('btnh,bsnh->bnts', q, k) / np.sqrt(H)
  if bias is not None:
    logits = logits + np.asarray(bias, np.float64)
  mask = np.broadcast_to(True if mask is None else np.asarray(mask),
                         (B, N, T, S))
  logits = np.where(mask, logits, -np.inf)
  row_max = logits.max(-1, keepdims=True)
  exp = np.where(mask, np.exp(logits - np.where(np.isfinite(row_max),
                                                row_max, 0)), 0)
  denom = exp.sum(-1, keepdims=True)
  weights = np.divide(exp, denom, out=np.zeros_like(exp), where=denom > 0)
  return np.einsum('bnts,bsnh->btnh', weights, v), weights


def random_qkv(seed, B=2, T=5, S=7, N=4, K=2, H=8, dtype=jnp.float32):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (B, T, N, H), dtype),
          jax.random.normal(kk, (B, S, K, H), dtype),
          jax.random.normal(kv, (B, S, K, H), dtype))


def padding_mask(B, S, lengths):
  return make_padding_mask(np.asarray(lengths), S)


@pytest.mark.parametrize('N, K', [(4, 4), (4, 2), (6, 1)])
def test_grouped_and_multi_query_equal_jax_nn(N, K):
  q, k, v = random_qkv(0, N=N, K=K)
  mask = padding_mask(2, 7, [7, 4])
  got = dot_product_attention(q, k, v, mask=mask)
  want = jax.nn.dot_product_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('T, S', [(5, 5), (3, 7)])
def test_causal_equals_jax_nn(T, S):
  q, k, v = random_qkv(1, T=T, S=S)
  got = dot_product_attention(q, k, v, is_causal=True)
  want = jax.nn.dot_product_attention(q, k, v, is_causal=True)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_weights_bias_and_mask_equal_numpy_reference():
  q, k, v = random_qkv(2, N=4, K=1)
  bias = jax.random.normal(jax.random.key(3), (1, 4, 5, 7))
  mask = combine_masks(padding_mask(2, 7, [6, 3]), make_causal_mask(5, 7))
  out, weights = dot_product_attention(q, k, v, bias=bias, mask=mask,
                                       return_weights=True)
  want_out, want_weights = numpy_attention(q, k, v, mask=mask, bias=bias)
  assert out.shape == (2, 5, 4, 8) and weights.shape == (2, 4, 5, 7)
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-7)


def rows_masked_mask():
  """[B, 1, T, S]: batch 0 query 1 and batch 1 queries 0, 4 see no key."""
  mask = np.ones((2, 1, 5, 7), bool)
  mask[:, :, :, 5:] = False
  mask[0, :, 1] = False
  mask[1, :, [0, 4]] = False
  return jnp.asarray(mask)


@pytest.mark.parametrize('implementation', ['xla', 'chunked', None])
def test_fully_masked_rows_are_zero_in_values_and_gradients(implementation):
  q, k, v = random_qkv(4)
  mask = rows_masked_mask()

  def loss(q, k, v):
    out, weights = dot_product_attention(q, k, v, mask=mask,
                                         implementation=implementation,
                                         return_weights=True)
    return jnp.sum(out ** 2) + jnp.sum(weights ** 2), (out, weights)

  grads, (out, weights) = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(
      q, k, v)
  dead_q = np.zeros((2, 5), bool)
  dead_q[0, 1] = dead_q[1, 0] = dead_q[1, 4] = True
  np.testing.assert_array_equal(np.asarray(out)[dead_q], 0.0)
  np.testing.assert_array_equal(np.asarray(weights).transpose(0, 2, 1, 3)[dead_q],
                                0.0)
  np.testing.assert_array_equal(np.asarray(weights)[..., 5:], 0.0)
  for g in grads:
    assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(np.asarray(grads[0])[dead_q], 0.0)
  # The live rows match the reference, so the dead ones took nothing from them.
  want_out, want_weights = numpy_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-7)


def test_gradients_equal_jax_nn_on_live_rows():
  q, k, v = random_qkv(5, N=4, K=2)
  mask = combine_masks(padding_mask(2, 7, [7, 3]), make_causal_mask(5, 7))
  cotangent = jax.random.normal(jax.random.key(6), (2, 5, 4, 8))

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v, mask=mask) * cotangent)

  got = jax.grad(loss(dot_product_attention), (0, 1, 2))(q, k, v)
  want = jax.grad(loss(jax.nn.dot_product_attention), (0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('implementation', ['chunked', None])
def test_every_implementation_equals_xla_in_values_and_gradients(
    implementation):
  q, k, v = random_qkv(7, T=6, S=6, N=4, K=2)
  mask = padding_mask(2, 6, [6, 2])

  def loss(impl):
    def f(q, k, v):
      return jnp.sum(jnp.sin(dot_product_attention(
          q, k, v, mask=mask, is_causal=True, implementation=impl)))
    return f

  want_val, want_grads = jax.value_and_grad(loss('xla'), (0, 1, 2))(q, k, v)
  got_val, got_grads = jax.value_and_grad(loss(implementation), (0, 1, 2))(
      q, k, v)
  np.testing.assert_allclose(got_val, want_val, rtol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != 'gpu', reason='needs a GPU')
def test_cudnn_equals_xla_on_gpu():
  q, k, v = random_qkv(8, T=16, S=16, N=4, K=2, H=64, dtype=jnp.bfloat16)
  mask = padding_mask(2, 16, [16, 9])
  got = dot_product_attention(q, k, v, mask=mask, implementation='cudnn')
  want = dot_product_attention(q, k, v, mask=mask, implementation='xla')
  np.testing.assert_allclose(np.asarray(got, np.float32),
                             np.asarray(want, np.float32), atol=2e-2)


@pytest.mark.skipif(jax.default_backend() == 'gpu', reason='GPU present')
def test_cudnn_off_gpu_is_a_clear_error():
  q, k, v = random_qkv(9)
  with pytest.raises(ValueError, match="platform 'cpu'"):
    dot_product_attention(q, k, v, implementation='cudnn')


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs_stay_finite_with_masks(dtype):
  q, k, v = random_qkv(10, dtype=dtype)
  q = q * 30  # large logits: a half-precision softmax would overflow
  mask = rows_masked_mask()
  out, weights = dot_product_attention(q, k, v, mask=mask, return_weights=True)
  assert out.dtype == dtype and weights.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(out, np.float32)))
  grads = jax.grad(lambda q: jnp.sum(dot_product_attention(
      q, k, v, mask=mask).astype(jnp.float32)))(q)
  assert np.all(np.isfinite(np.asarray(grads, np.float32)))
  want, _ = numpy_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=5e-2)


def test_dropout_only_when_not_deterministic_and_reproducible():
  q, k, v = random_qkv(11)
  plain = dot_product_attention(q, k, v)
  rng = jax.random.key(12)
  off = dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=rng,
                              deterministic=True)
  np.testing.assert_array_equal(off, plain)
  on1 = dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=rng,
                              deterministic=False)
  on2 = dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=rng,
                              deterministic=False)
  other = dot_product_attention(q, k, v, dropout_rate=0.5,
                                dropout_rng=jax.random.key(13),
                                deterministic=False)
  np.testing.assert_array_equal(on1, on2)
  assert not np.allclose(on1, plain) and not np.allclose(on1, other)


def test_dropout_statistics():
  # With all-ones values the output is the sum of the dropped, rescaled
  # weights of a row: 1 in expectation, and a share `rate` of weights is zero.
  rate = 0.3
  q, k, _ = random_qkv(14, B=4, T=32, S=64, N=4, K=4)
  ones = jnp.ones((4, 64, 4, 1))
  out = dot_product_attention(q, k, ones, dropout_rate=rate,
                              dropout_rng=jax.random.key(15),
                              deterministic=False)
  assert abs(float(jnp.mean(out)) - 1.0) < 0.02
  uniform_q = jnp.zeros_like(q)  # uniform weights: out = kept share / (1-rate)
  out = dot_product_attention(uniform_q, k, ones, dropout_rate=rate,
                              dropout_rng=jax.random.key(16),
                              deterministic=False)
  kept = np.asarray(out).mean() * (1 - rate)
  assert abs(kept - (1 - rate)) < 0.01


@pytest.mark.parametrize('kwargs, message', [
    (dict(query=np.zeros((2, 5, 8))), r'query must be rank 4'),
    (dict(key=np.zeros((2, 7, 3, 8)), value=np.zeros((2, 7, 3, 8))),
     r'N=4 must be divisible by .* K=3'),
    (dict(value=np.zeros((2, 6, 2, 8))), 'must agree on S and K'),
    (dict(mask=np.ones((2, 4, 5, 6), bool)), r'mask of shape .* does not '
     r'broadcast to \[B, N, T, S\] = \(2, 4, 5, 7\)'),
    (dict(bias=np.zeros((3, 1, 1, 7))), 'bias of shape'),
    (dict(dropout_rate=1.0), r'dropout_rate must be in \[0, 1\), got 1.0'),
    (dict(dropout_rate=-0.1), r'dropout_rate must be in \[0, 1\)'),
    (dict(implementation='flash'), "unknown implementation 'flash'"),
    (dict(dropout_rate=0.1, deterministic=False), 'no dropout_rng'),
])
def test_bad_input_is_a_clear_value_error(kwargs, message):
  q, k, v = random_qkv(17)
  args = dict(query=q, key=k, value=v)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    dot_product_attention(**args)


def test_jit_compatible():
  q, k, v = random_qkv(18)
  mask = padding_mask(2, 7, [7, 2])
  fn = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, mask=mask,
                                                     is_causal=True))
  np.testing.assert_allclose(
      fn(q, k, v), dot_product_attention(q, k, v, mask=mask, is_causal=True),
      rtol=1e-6, atol=1e-6)
