"""implementation='pallas': dispatch, and both kernels in interpret mode on CPU.

The kernels (splash attention for TPU, Triton for GPU) run here through
``attention.pallas.interpret``, at the smallest shapes they accept (T, S
multiples of 128), and are checked against 'xla', values and gradients.
"""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import dot_product
from attention import dot_product_attention
from attention import pallas

Call = pallas.Call


def qkv(seed, B=1, T=128, S=128, N=2, K=2, H=16, dtype=jnp.float32):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (B, T, N, H), dtype),
          jax.random.normal(kk, (B, S, K, H), dtype),
          jax.random.normal(kv, (B, S, K, H), dtype))


# (platform, call, expected): implementation=None on each platform, no
# hardware needed.
BIG, SMALL = 1024, 128
DISPATCH = [
    ('cpu', Call(T=SMALL, S=SMALL, N=4, K=4, H=64, Hv=64), 'chunked'),
    ('cpu', Call(T=64, S=64, N=4, K=4, H=64, Hv=64), 'xla'),
    ('cpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, dtype='bfloat16'),
     'chunked'),
    ('cpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, return_weights=True),
     'xla'),
    ('gpu', Call(T=64, S=64, N=4, K=4, H=64, Hv=64, dtype='bfloat16'), 'cudnn'),
    ('gpu', Call(T=BIG, S=BIG, N=4, K=1, H=64, Hv=64, dtype='bfloat16',
                 mask='dense'), 'cudnn'),
    ('gpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64), 'pallas'),
    ('gpu', Call(T=BIG, S=BIG, N=4, K=2, H=64, Hv=64, is_causal=True,
                 segment_ids='shared'), 'pallas'),
    ('gpu', Call(T=BIG, S=BIG, N=4, K=4, H=256, Hv=256, dtype='bfloat16'),
     'pallas'),  # head dim over cuDNN's 128
    ('gpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, mask='key'), 'chunked'),
    ('gpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, segment_ids='pair'),
     'chunked'),
    ('gpu', Call(T=1100, S=1100, N=4, K=4, H=64, Hv=64), 'chunked'),
    ('gpu', Call(T=64, S=64, N=4, K=4, H=64, Hv=64), 'xla'),
    ('gpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, dtype='bfloat16',
                 dropout=True), 'chunked'),
    ('gpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, dtype='bfloat16',
                 return_weights=True), 'xla'),
    ('tpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, dtype='bfloat16'),
     'pallas'),
    ('tpu', Call(T=BIG, S=2 * BIG, N=8, K=1, H=128, Hv=128, mask='key'),
     'pallas'),
    ('tpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, segment_ids='pair',
                 is_causal=True), 'pallas'),
    ('tpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, mask='dense'),
     'chunked'),
    ('tpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=64, bias=True), 'chunked'),
    ('tpu', Call(T=512, S=512, N=4, K=4, H=64, Hv=64), 'xla'),
    ('tpu', Call(T=BIG, S=BIG, N=4, K=4, H=64, Hv=32), 'chunked'),
]


@pytest.mark.parametrize('platform, call, expected', DISPATCH)
def test_dispatch_is_a_function_of_platform_and_call(platform, call, expected):
  assert dot_product.choose_implementation(platform, call) == expected


def test_dispatch_follows_target_platform():
  q = jax.ShapeDtypeStruct((1, 1024, 4, 64), jnp.bfloat16)
  call = dot_product.describe_call(q, q, q, is_causal=True)
  assert call == Call(T=1024, S=1024, N=4, K=4, H=64, Hv=64, dtype='bfloat16',
                      is_causal=True)
  for platform, want in (('cpu', 'chunked'), ('gpu', 'cudnn'),
                         ('tpu', 'pallas')):
    with dot_product.target_platform(platform):
      assert dot_product.current_platform() == platform
      got = dot_product.choose_implementation(dot_product.current_platform(),
                                              call)
      assert got == want
  assert dot_product.current_platform() == jax.default_backend()
  with pytest.raises(ValueError, match=r"unknown platform 'cuda'.*'gpu'"):
    with dot_product.target_platform('cuda'):
      pass


def test_mask_shapes_are_told_apart():
  q, k, v = qkv(0, T=4, S=6, N=2, K=2)
  kind = lambda m: dot_product.describe_call(q, k, v, mask=m).mask
  assert kind(jnp.ones((2, 1, 1, 6), bool)) == 'key'
  assert kind(jnp.ones((6,), bool)) == 'key'
  assert kind(jnp.ones((2, 1, 4, 1), bool)) == 'query'
  assert kind(jnp.ones((2, 1, 4, 6), bool)) == 'dense'
  assert kind(jnp.ones((2, 2, 1, 6), bool)) == 'dense'


def close(got, want, dtype):
  tol = dict(atol=2e-5, rtol=2e-5) if dtype == jnp.float32 else dict(
      atol=3e-2, rtol=3e-2)
  np.testing.assert_allclose(np.asarray(got, np.float32),
                             np.asarray(want, np.float32), **tol)


def check_against_xla(platform, q, k, v, **kwargs):
  """Kernel vs 'xla': outputs, and gradients of a random projection."""
  w = jax.random.normal(jax.random.key(9), q.shape[:3] + v.shape[-1:])

  def loss(impl, q, k, v):
    out = dot_product_attention(q, k, v, implementation=impl, **kwargs)
    return jnp.sum(out.astype(jnp.float32) * w), out

  grad = jax.grad(loss, argnums=(1, 2, 3), has_aux=True)
  with pallas.interpret(platform):
    got_grads, got = jax.jit(grad, static_argnums=0)('pallas', q, k, v)
  want_grads, want = jax.jit(grad, static_argnums=0)('xla', q, k, v)
  assert got.dtype == q.dtype
  close(got, want, q.dtype)
  for g, w_ in zip(got_grads, want_grads):
    assert g.dtype == w_.dtype
    close(g, w_, q.dtype)
  return got, got_grads


@pytest.mark.parametrize('platform', ['tpu', 'gpu'])
@pytest.mark.parametrize('dtype, L', [(jnp.float32, 256), (jnp.bfloat16, 128)])
def test_causal_grouped_query(platform, dtype, L):
  # L = 256: two blocks, so the causal block skipping is exercised.
  q, k, v = qkv(1, T=L, S=L, N=4, K=2, dtype=dtype)
  check_against_xla(platform, q, k, v, is_causal=True)


@pytest.mark.parametrize('platform', ['tpu', 'gpu'])
def test_shared_segment_ids_multi_query(platform):
  q, k, v = qkv(2, B=2, N=2, K=1)
  segments = jnp.asarray(np.repeat([[0, 1, 1, 2], [3, 3, 3, 3]], 32, axis=1),
                         jnp.int32)
  check_against_xla(platform, q, k, v, segment_ids=segments, is_causal=True)


def test_splash_key_padding_and_fully_masked_rows():
  # A key padding mask [B, 1, 1, S] with every key of example 1 padded, and
  # query segments of which one (id 7) matches no key: both give rows with
  # nothing to attend, which must come out zero with zero gradients.
  q, k, v = qkv(3, B=2, N=1, K=1)
  mask = jnp.asarray(np.arange(128)[None, :] < np.array([[100], [0]]))
  out, (dq, _, _) = check_against_xla('tpu', q, k, v,
                                      mask=mask[:, None, None, :])
  assert np.all(np.asarray(out[1]) == 0) and np.all(np.asarray(dq[1]) == 0)
  q_seg = jnp.asarray(np.repeat([[1, 7], [2, 1]], 64, axis=1), jnp.int32)
  kv_seg = jnp.asarray(np.repeat([[1, 2], [2, 1]], 64, axis=1), jnp.int32)
  out, (dq, _, _) = check_against_xla('tpu', q, k, v,
                                      segment_ids=(q_seg, kv_seg))
  assert np.all(np.asarray(out[0, 64:]) == 0)
  assert np.all(np.asarray(dq[0, 64:]) == 0)
  assert np.any(np.asarray(out[0, :64]) != 0)


def test_pallas_on_cpu_needs_interpret_mode():
  q, k, v = qkv(4)
  with pytest.raises(ValueError, match=r"on 'cpu'.*interpret\('gpu' \| 'tpu'"):
    dot_product_attention(q, k, v, implementation='pallas')
  with pytest.raises(ValueError, match=r"unknown platform 'cuda'"):
    with pallas.interpret('cuda'):
      pass


@pytest.mark.parametrize('platform, kwargs, feature', [
    ('tpu', dict(bias=jnp.zeros((1, 1, 128, 128))), 'a logit bias'),
    ('gpu', dict(dropout_rate=0.1, deterministic=False,
                 dropout_rng=jax.random.key(0)), 'dropout'),
    ('gpu', dict(segment_ids=(jnp.zeros((1, 128), jnp.int32),
                              jnp.zeros((1, 128), jnp.int32))),
     'separate query and key segment ids'),
])
def test_features_a_kernel_lacks_are_errors(platform, kwargs, feature):
  q, k, v = qkv(5)
  with pallas.interpret(platform), pytest.raises(ValueError, match=feature):
    dot_product_attention(q, k, v, implementation='pallas', **kwargs)


def test_lengths_off_the_block_are_an_error():
  q, k, v = qkv(6, T=100, S=128)
  with pallas.interpret('tpu'), pytest.raises(
      ValueError, match=r'multiples of 128 \(T=100, S=128\)'):
    dot_product_attention(q, k, v, implementation='pallas')


def test_dense_mask_and_weights_fall_back_with_one_log_line(caplog):
  q, k, v = qkv(7)
  mask = jax.random.bernoulli(jax.random.key(1), 0.7, (1, 1, 128, 128))
  want = dot_product_attention(q, k, v, mask=mask, implementation='xla')
  attend = jax.jit(functools.partial(dot_product_attention,
                                     implementation='pallas'),
                   static_argnames='return_weights')
  dot_product._logged_fallbacks.clear()  # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING, logger='attention'):
    with pallas.interpret('tpu'):
      got = attend(q, k, v, mask=mask)
      attend(q, k, v, mask=mask[0])  # traced again (3-D): no second line
      _, weights = attend(q, k, v, mask=mask, return_weights=True)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
  assert weights.shape == (1, 2, 128, 128)
  dense = [r for r in caplog.records if 'arbitrary dense mask' in r.message]
  assert len(dense) == 1 and "running 'chunked'" in dense[0].message
  assert any("running 'xla'" in r.message for r in caplog.records)


def test_segment_ids_shape_errors():
  q, k, v = qkv(8, T=128, S=256)
  with pytest.raises(ValueError, match=r'self-attention only \(T = S\)'):
    dot_product_attention(q, k, v, segment_ids=jnp.zeros((1, 128), jnp.int32))
  with pytest.raises(ValueError, match=r'key segment ids must be int \[B, S\]'):
    dot_product_attention(q, k, v, segment_ids=(
        jnp.zeros((1, 128), jnp.int32), jnp.zeros((1, 128), jnp.int32)))
