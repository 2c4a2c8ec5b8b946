"""Pallas flash-attention kernels behind ``implementation='pallas'``.

On a TPU this is JAX's splash attention
(``jax.experimental.pallas.ops.tpu.splash_attention``); on an NVIDIA GPU it is
JAX's Triton flash attention (``jax.experimental.pallas.ops.gpu.attention``).
Both run on CPU in Pallas interpret mode, which is how this package tests them:

  with attention.pallas.interpret('tpu'):   # or 'gpu'
    out = attention.dot_product_attention(q, k, v, is_causal=True,
                                          implementation='pallas')

What each kernel serves (anything else is handled as :func:`unsupported`
says: a fallback with a one-time log line, or an error naming the feature):

  both     causal (aligned at the top left, as every other path), grouped-query
           and multi-query heads, segment ids, sequence lengths that are
           multiples of 128, equal query and value head dims.
  splash   separate query and key segment ids, so also a key padding mask
           [B, 1, 1, S] or a query padding mask [B, 1, T, 1].
  Triton   one segment_ids array shared by queries and keys (self-attention);
           grouped-query heads by repeating the key/value heads.

A query row that matches no key gets zeros and zero gradients, as on the
other paths: the kernels would average the values there, so the row is
zeroed after the kernel (its cotangent is then zero, and so are the kernel's
gradients from it).

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import threading

import jax
import jax.numpy as jnp

Array = jax.Array

PLATFORMS = ('gpu', 'tpu')
KERNELS = {'gpu': 'Triton flash attention', 'tpu': 'splash attention'}
BLOCK = 128  # the sequence tile both kernels are given; T and S multiples of it

_state = threading.local()


@contextlib.contextmanager
def interpret(platform: str = 'gpu'):
  """Run ``platform``'s Pallas kernel in interpret mode (on any backend).

  Slow (every grid step runs as ordinary JAX ops) but exact: this is how the
  kernels are tested on CPU.
  """
  if platform not in PLATFORMS:
    raise ValueError(f'attention.pallas.interpret: unknown platform '
                     f'{platform!r}; valid: {PLATFORMS}.')
  previous = getattr(_state, 'interpret', None)
  _state.interpret = platform
  try:
    yield
  finally:
    _state.interpret = previous


def interpreting() -> str | None:
  """The platform whose kernel runs in interpret mode, or None."""
  return getattr(_state, 'interpret', None)


@dataclasses.dataclass(frozen=True)
class Call:
  """What a dot_product_attention call asks for, as dispatch sees it.

  mask: 'none', 'key' ([B, 1, 1, S]), 'query' ([B, 1, T, 1]) or 'dense'.
  segment_ids: 'none', 'shared' (one [B, T] array, T = S) or 'pair'.
  """
  T: int
  S: int
  N: int
  K: int
  H: int
  Hv: int
  dtype: str = 'float32'
  is_causal: bool = False
  mask: str = 'none'
  bias: bool = False
  segment_ids: str = 'none'
  dropout: bool = False
  return_weights: bool = False


# Where the kernel cannot serve a call: (action, feature). 'xla'/'chunked' =
# fall back to that path with a one-time log line; 'error' = a ValueError
# when 'pallas' was asked for explicitly. Dispatch (implementation=None)
# never picks 'pallas' for such a call.
def unsupported(platform: str, call: Call) -> tuple[str, str] | None:
  """Why ``platform``'s kernel cannot serve ``call``, or None if it can."""
  if call.return_weights:
    return 'xla', 'returned attention weights (only the full matrix has them)'
  if call.dropout:
    return 'error', 'dropout on the attention weights'
  if call.bias:
    return 'error', 'a logit bias'
  if call.H != call.Hv:
    return 'error', (f'different query/key and value head dims (H={call.H}, '
                     f'Hv={call.Hv})')
  if call.T % BLOCK or call.S % BLOCK:
    return 'error', (f'sequence lengths that are not multiples of {BLOCK} '
                     f'(T={call.T}, S={call.S})')
  if call.mask == 'dense':
    return 'chunked', ('an arbitrary dense mask (give segment_ids, or a '
                       '[B, 1, 1, S] key / [B, 1, T, 1] query padding mask)')
  if platform == 'gpu':
    if call.mask != 'none':
      return 'chunked', (f'a {call.mask} padding mask (the Triton kernel takes '
                         'only segment_ids shared by queries and keys)')
    if call.segment_ids == 'pair':
      return 'error', ('separate query and key segment ids (the Triton '
                       'kernel takes one segment_ids array, self-attention)')
  return None


def attention(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, *,
              segment_ids: tuple[Array, Array] | None, is_causal: bool,
              scale: float, platform: str) -> Array:
  """The kernel of ``platform`` (interpret mode if :func:`interpreting`).

  ``segment_ids`` is a (query [B, T], key [B, S]) pair of int arrays, or
  None; the caller has checked the call with :func:`unsupported`.
  Returns [B, T, N, H] in the query's dtype.
  """
  run_interpreted = interpreting() == platform
  k_BSKH = k_BSKH.astype(q_BTNH.dtype)
  v_BSKH = v_BSKH.astype(q_BTNH.dtype)
  if platform == 'tpu':
    out_BTNH = _splash(q_BTNH, k_BSKH, v_BSKH, segment_ids, is_causal, scale,
                       run_interpreted)
  else:
    out_BTNH = _triton(q_BTNH, k_BSKH, v_BSKH, segment_ids, is_causal, scale,
                       run_interpreted)
  if segment_ids is not None:
    valid_BT = _rows_with_a_key(*segment_ids, is_causal)
    out_BTNH = jnp.where(valid_BT[:, :, None, None], out_BTNH, 0)
  return out_BTNH.astype(q_BTNH.dtype)


def _rows_with_a_key(q_segment_BT, kv_segment_BS, is_causal):
  """bool [B, T]: query t has a key s with the same segment (and s <= t).

  By sorting the keys' segment ids, in O((T + S) log S), never [T, S].
  """
  S = kv_segment_BS.shape[1]

  def one(q_T, kv_S):
    order_S = jnp.argsort(kv_S, stable=True)
    sorted_S = kv_S[order_S]
    pos_T = jnp.clip(jnp.searchsorted(sorted_S, q_T, side='left'), 0, S - 1)
    found_T = sorted_S[pos_T] == q_T
    if is_causal:  # the first key of the segment (smallest index) is <= t
      found_T &= order_S[pos_T] <= jnp.arange(q_T.shape[0])
    return found_T

  return jax.vmap(one)(q_segment_BT, kv_segment_BS)


def _kernel_module(platform):
  """JAX's kernel module for ``platform``; a clear error if this JAX lacks it.

  Both live under jax.experimental and were written against jax 0.10 (the
  version CI runs); their signatures may change in later releases.
  """
  name = {'tpu': 'jax.experimental.pallas.ops.tpu.splash_attention',
          'gpu': 'jax.experimental.pallas.ops.gpu.attention'}[platform]
  try:
    return importlib.import_module(name)
  except ImportError as e:
    raise RuntimeError(
        f"implementation='pallas' on {platform!r} needs {name}, which this "
        f'JAX ({jax.__version__}) does not provide: {e}. Use '
        "implementation='chunked' (or None), or a JAX with that module "
        '(0.10 is tested).') from e


def _splash(q_BTNH, k_BSKH, v_BSKH, segment_ids, is_causal, scale,
            run_interpreted):
  splash = _kernel_module('tpu')
  B, T, N, H = q_BTNH.shape
  S, K = k_BSKH.shape[1], k_BSKH.shape[2]
  G = N // K
  q_BTNH = q_BTNH * jnp.asarray(scale, q_BTNH.dtype)  # splash has no scale
  kernel = _splash_kernel(T, S, G if K < N else N, K < N, is_causal,
                          run_interpreted)
  k_BKSH = jnp.transpose(k_BSKH, (0, 2, 1, 3))
  v_BKSH = jnp.transpose(v_BSKH, (0, 2, 1, 3))

  def one(q_NTH, k_KSH, v_KSH, q_seg_T, kv_seg_S):
    seg = None if q_seg_T is None else splash.SegmentIds(q=q_seg_T, kv=kv_seg_S)
    if K == N:
      return kernel(q_NTH, k_KSH, v_KSH, segment_ids=seg)
    # Multi-query kernel per key/value head, over its group of G query heads.
    q_KGTH = q_NTH.reshape(K, G, T, H)
    return jax.vmap(lambda q, k, v: kernel(q, k, v, segment_ids=seg))(
        q_KGTH, k_KSH, v_KSH).reshape(N, T, H)

  q_BNTH = jnp.transpose(q_BTNH, (0, 2, 1, 3))
  seg_q, seg_kv = segment_ids if segment_ids is not None else (None, None)
  out_BNTH = jax.vmap(one)(q_BNTH, k_BKSH, v_BKSH, seg_q, seg_kv)
  return jnp.transpose(out_BNTH, (0, 2, 1, 3))


@functools.lru_cache(maxsize=64)
def _splash_kernel(T, S, heads, is_mqa, is_causal, run_interpreted):
  """A splash kernel for [heads, T, H] queries; built once per shape."""
  splash = _kernel_module('tpu')
  one = splash.CausalMask((T, S)) if is_causal else splash.FullMask((T, S))
  mask = splash.MultiHeadMask([one] * heads)
  make = splash.make_splash_mqa if is_mqa else splash.make_splash_mha
  with jax.ensure_compile_time_eval():  # concrete block tables, even in a jit
    return make(mask, head_shards=1, q_seq_shards=1,
                interpret=run_interpreted)


def _triton(q_BTNH, k_BSKH, v_BSKH, segment_ids, is_causal, scale,
            run_interpreted):
  triton = _kernel_module('gpu')
  N, K = q_BTNH.shape[2], k_BSKH.shape[2]
  if K < N:  # the kernel wants N key/value heads: head n reads n // G
    k_BSKH = jnp.repeat(k_BSKH, N // K, axis=2)
    v_BSKH = jnp.repeat(v_BSKH, N // K, axis=2)
  shared = None if segment_ids is None else segment_ids[0]
  return triton.mha(q_BTNH, k_BSKH, v_BSKH, shared, sm_scale=float(scale),
                    causal=is_causal, interpret=run_interpreted)


def hlo_markers(platform: str) -> tuple[str, ...]:
  """Substrings of a lowered module that show ``platform``'s kernel ran."""
  return {'tpu': ('tpu_custom_call',), 'gpu': ('__gpu$xla.gpu.triton',)}[
      platform]

