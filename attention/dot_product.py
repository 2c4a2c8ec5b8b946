"""Scaled dot-product attention with grouped-query heads, one function for all.

Each group of G = N // K consecutive query heads shares one key/value head.
Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from typing import Literal

import jax
import jax.numpy as jnp

from attention import chunked as chunked_lib
from attention import masks as masks_lib
from attention import pallas as pallas_lib

Array = jax.Array
Implementation = Literal['xla', 'chunked', 'cudnn', 'pallas'] | None

IMPLEMENTATIONS = ('xla', 'chunked', 'cudnn', 'pallas')
PLATFORMS = ('cpu', 'gpu', 'tpu')

_state = threading.local()
_logged_fallbacks: set[str] = set()


@contextlib.contextmanager
def target_platform(platform: str):
  """Trace attention as if on ``platform`` ('cpu', 'gpu' or 'tpu').

  ``implementation=None`` then resolves, and 'cudnn' / 'pallas' build their
  kernels, as they would there: for lowering a step for another platform
  from this machine (``jit(f).trace(...).lower(lowering_platforms=...)``).
  Functions jitted before entering keep their traces; trace afresh inside.
  Yields a list that collects the implementation each call traced inside
  resolved to (after any fallback).
  """
  if platform not in PLATFORMS:
    raise ValueError(f'target_platform: unknown platform {platform!r}; '
                     f'valid: {PLATFORMS}.')
  previous = (getattr(_state, 'platform', None),
              getattr(_state, 'chosen', None))
  _state.platform, _state.chosen = platform, []
  try:
    yield _state.chosen
  finally:
    _state.platform, _state.chosen = previous


def current_platform() -> str:
  """The platform attention is traced for: :func:`target_platform`'s, else
  JAX's default backend."""
  return getattr(_state, 'platform', None) or jax.default_backend()


def dot_product_attention(query: Array,
                          key: Array,
                          value: Array,
                          *,
                          bias: Array | None = None,
                          mask: Array | None = None,
                          segment_ids: Array | tuple[Array, Array] | None = None,
                          is_causal: bool = False,
                          scale: float | None = None,
                          dropout_rate: float = 0.0,
                          dropout_rng: Array | None = None,
                          deterministic: bool = True,
                          implementation: Implementation = None,
                          return_weights: bool = False,
                          precision: jax.lax.PrecisionLike = None):
  """softmax(scale · q·kᵀ + bias, masked) · v, per head.

  Args:
    query: [B, T, N, H].
    key: [B, S, K, H] with N divisible by K (K = N: multi-head; 1 < K < N:
      grouped-query; K = 1: multi-query). Key/value heads are shared by their
      query-head group by reshaping the queries, never by repeating K/V.
    value: [B, S, K, Hv].
    bias: float, broadcastable to [B, N, T, S], added to the logits. It must be
      finite; use ``mask`` to exclude keys.
    mask: bool, broadcastable to [B, N, T, S]; True = may attend. (Non-bool
      masks follow Flax: nonzero = may attend.)
    segment_ids: int [B, T] for self-attention (T = S), or a pair (query
      [B, T], key [B, S]): query t may attend key s only where their ids are
      equal (packed sequences; padding as its own id). The Pallas kernels take
      them natively; the other paths turn them into a [B, 1, T, S] mask.
    is_causal: also apply the causal mask ``key <= query`` (aligned at the top
      left when T != S, as in ``jax.nn.dot_product_attention``).
    scale: logit scale, default ``1 / sqrt(H)``.
    dropout_rate: dropout on the attention weights, in [0, 1).
    dropout_rng: PRNG key, required when dropout is active.
    deterministic: no dropout when True.
    implementation: 'xla' (einsum + softmax over the full [B, N, T, S]
      matrix), 'chunked' (blockwise with an online softmax and its own
      backward pass, memory O(T + S) instead of O(T·S); see
      :mod:`attention.chunked`; its dropout masks are drawn per block, so
      they differ from 'xla''s in bits, not in distribution; with
      ``return_weights=True`` it falls back to 'xla', which alone builds the
      full matrix), 'cudnn'
      (``jax.nn.dot_product_attention(implementation='cudnn')``, GPU only),
      'pallas' (flash kernels: splash attention on TPU, Triton on GPU; on CPU
      only inside :func:`attention.pallas.interpret`; see
      :mod:`attention.pallas` for what they serve), or None for the best
      available on this platform (:func:`choose_implementation`).
    return_weights: also return the attention weights.
    precision: matmul precision of the two einsums.

  Returns:
    [B, T, N, Hv] in the query's dtype; with ``return_weights`` a pair
    ``(outputs, weights)`` where weights are the float32 softmax
    probabilities [B, N, T, S] before dropout.

  A query row whose keys are all masked gets zero weights and a zero output,
  with zero (finite) gradients. Softmax runs in float32 whatever the input
  dtype.
  """
  _check_args(query, key, value, bias, mask, dropout_rate, implementation)
  segment_ids = _check_segment_ids(segment_ids, query, key)
  dropout_active = dropout_rate > 0.0 and not deterministic
  if dropout_active and dropout_rng is None:
    raise ValueError('dot_product_attention: dropout is active '
                     f'(dropout_rate={dropout_rate}, deterministic=False) but '
                     'no dropout_rng was given.')
  if scale is None:
    scale = 1.0 / math.sqrt(query.shape[-1])
  call = describe_call(query, key, value, bias=bias, mask=mask,
                       segment_ids=segment_ids, is_causal=is_causal,
                       dropout=dropout_active, return_weights=return_weights)
  platform = current_platform()
  if implementation is None:
    implementation = choose_implementation(platform, call)
  if implementation == 'pallas':
    implementation = _pallas_or_fallback(platform, call)
  if getattr(_state, 'chosen', None) is not None:
    _state.chosen.append(implementation)
  if implementation == 'pallas':
    return pallas_lib.attention(
        query, key, value, segment_ids=_kernel_segment_ids(
            segment_ids, mask, query, key),
        is_causal=is_causal, scale=scale, platform=_kernel_platform(platform))
  if segment_ids is not None:
    mask = masks_lib.combine_masks(mask, _segment_mask(*segment_ids))
  if implementation == 'chunked' and not return_weights:
    return chunked_lib.chunked_attention(
        query, key, value, bias=bias, mask=mask, is_causal=is_causal,
        scale=scale, dropout_rate=dropout_rate if dropout_active else 0.0,
        dropout_rng=dropout_rng, precision=precision)
  if is_causal:
    mask = masks_lib.combine_masks(
        mask, masks_lib.make_causal_mask(query.shape[1], key.shape[1]))
  if implementation == 'cudnn':
    return _cudnn_attention(query, key, value, bias, mask, scale,
                            dropout_active, return_weights, platform)
  # 'xla', or 'chunked' with return_weights (which needs the full matrix).
  out, weights = _xla_attention(
      query, key, value, bias, mask, scale,
      dropout_rate if dropout_active else 0.0, dropout_rng, precision)
  return (out, weights) if return_weights else out


def _xla_attention(q_BTNH, k_BSKH, v_BSKH, bias, mask, scale, dropout_rate,
                   dropout_rng, precision):
  """Einsum + float32 masked softmax; returns (out [B,T,N,Hv], w [B,N,T,S])."""
  B, T, N, H = q_BTNH.shape
  K = k_BSKH.shape[2]
  G = N // K
  q_BTKGH = q_BTNH.reshape(B, T, K, G, H)
  logits_BKGTS = jnp.einsum('BTKGH,BSKH->BKGTS', q_BTKGH, k_BSKH,
                            preferred_element_type=jnp.float32,
                            precision=precision)
  logits_BKGTS = logits_BKGTS * jnp.float32(scale)
  if bias is not None:
    logits_BKGTS = logits_BKGTS + _split_heads(bias, K, G).astype(jnp.float32)
  mask_BKGTS = None if mask is None else _split_heads(mask, K, G)
  weights_BKGTS = masks_lib.masked_softmax(logits_BKGTS, mask_BKGTS)
  probs_BKGTS = weights_BKGTS
  if dropout_rate > 0.0:
    keep_BKGTS = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate,
                                      probs_BKGTS.shape)
    probs_BKGTS = jnp.where(keep_BKGTS, probs_BKGTS / (1.0 - dropout_rate), 0.)
  out_BTKGH = jnp.einsum('BKGTS,BSKH->BTKGH',
                         probs_BKGTS.astype(v_BSKH.dtype), v_BSKH,
                         precision=precision)
  out_BTNH = out_BTKGH.reshape(B, T, N, v_BSKH.shape[-1]).astype(q_BTNH.dtype)
  S = k_BSKH.shape[1]
  return out_BTNH, weights_BKGTS.reshape(B, N, T, S)


def _split_heads(x, K, G):
  """[b, n, t, s] (n in {1, N}, any leading size-1 axes) -> [b, k, g, t, s]."""
  x = x.reshape((1,) * (4 - x.ndim) + x.shape)
  b, n, t, s = x.shape
  if n == 1:
    return x.reshape(b, 1, 1, t, s)
  return x.reshape(b, K, G, t, s)


# On CPU the chunked path beat 'xla' at every length measured from T = S = 128
# to 8192 (causal or not, forward and forward+backward; BENCHMARKS.md). Below
# that the two are level per call (0.87-1.35x, T = S = 16 to 64), but the
# translate Transformer's train step (sequences of a few dozen tokens) ran at
# 0.88-0.94x with 'chunked' against 'xla' in two runs of
# benchmarks/train_step.py, so short sequences keep 'xla'. On GPU/TPU the
# flash kernels ('pallas'), else 'chunked', take over where the [B, N, T, S]
# matrix reaches 1024² entries per example and head: a size chosen, not
# measured here (benchmarks/device.sh measures the paths on a GPU).
_CHUNKED_MIN_LOGITS = {'cpu': 128 * 128, 'gpu': 1024 * 1024,
                       'tpu': 1024 * 1024}
_PALLAS_MIN_LOGITS = {'gpu': 1024 * 1024, 'tpu': 1024 * 1024}


def describe_call(query, key, value, *, bias=None, mask=None,
                  segment_ids=None, is_causal=False, dropout=False,
                  return_weights=False) -> pallas_lib.Call:
  """The features and sizes of a call, as dispatch sees them."""
  T, N, H = query.shape[1:]
  S, K, Hv = key.shape[1], key.shape[2], value.shape[-1]
  if segment_ids is None:
    segments = 'none'
  else:
    segments = 'shared' if segment_ids[0] is segment_ids[1] else 'pair'
  return pallas_lib.Call(
      T=T, S=S, N=N, K=K, H=H, Hv=Hv, dtype=jnp.dtype(query.dtype).name,
      is_causal=is_causal, mask=_mask_kind(mask), bias=bias is not None,
      segment_ids=segments, dropout=dropout, return_weights=return_weights)


def _mask_kind(mask):
  """'none', 'key' ([B, 1, 1, S]), 'query' ([B, 1, T, 1]) or 'dense'."""
  if mask is None:
    return 'none'
  shape = (1,) * (4 - mask.ndim) + tuple(mask.shape)
  if shape[1] == shape[2] == 1:
    return 'key'
  if shape[1] == shape[3] == 1:
    return 'query'
  return 'dense'


def cudnn_supports(call: pallas_lib.Call) -> bool:
  """Whether ``jax.nn``'s cuDNN attention takes the call."""
  return (not call.dropout and not call.return_weights
          and call.dtype in ('bfloat16', 'float16')
          and call.H == call.Hv and call.H % 8 == 0 and call.H <= 128)


def choose_implementation(platform: str, call: pallas_lib.Call) -> str:
  """What ``implementation=None`` runs: a pure function of its arguments.

  'xla' whenever the weights are requested (only it builds the full
  matrix). On a GPU: cuDNN where it supports the call, else the Pallas
  (Triton) kernel where it serves the call and the matrix is large, else
  'chunked' where large, else 'xla'. On a TPU: splash ('pallas') where it
  serves the call and the matrix is large, else 'chunked' where large, else
  'xla'. On CPU: 'chunked' from T·S = 128², else 'xla' (the kernels run on
  CPU only in interpret mode, when asked for by name). "Large" is
  T·S ≥ ``_PALLAS_MIN_LOGITS`` / ``_CHUNKED_MIN_LOGITS`` of the platform.
  """
  if platform not in PLATFORMS:
    raise ValueError(f'choose_implementation: unknown platform {platform!r}; '
                     f'valid: {PLATFORMS}.')
  if call.return_weights:
    return 'xla'
  if platform == 'gpu' and cudnn_supports(call):
    return 'cudnn'
  logits = call.T * call.S
  if (logits >= _PALLAS_MIN_LOGITS.get(platform, float('inf'))
      and pallas_lib.unsupported(platform, call) is None):
    return 'pallas'
  if logits >= _CHUNKED_MIN_LOGITS[platform]:
    return 'chunked'
  return 'xla'


def _kernel_platform(platform):
  """Whose kernel 'pallas' runs: the platform's, or the interpreted one."""
  if platform in pallas_lib.PLATFORMS:
    return platform
  return pallas_lib.interpreting()


def _pallas_or_fallback(platform, call):
  """'pallas', or the path it falls back to (logged once), or a ValueError."""
  kernel_platform = _kernel_platform(platform)
  if kernel_platform is None:
    raise ValueError(
        "dot_product_attention: implementation='pallas' runs the Pallas flash "
        "kernels on 'gpu' (Triton) or 'tpu' (splash); this process runs on "
        f"{platform!r}. On CPU they run only in interpret mode, inside "
        "`with attention.pallas.interpret('gpu' | 'tpu'):`. Use 'xla', "
        "'chunked' or None here.")
  reason = pallas_lib.unsupported(kernel_platform, call)
  if reason is None:
    return 'pallas'
  action, feature = reason
  kernel = pallas_lib.KERNELS[kernel_platform]
  if action == 'error':
    raise ValueError("dot_product_attention: implementation='pallas' "
                     f'({kernel}) does not support {feature}. Use '
                     "implementation='xla' or 'chunked', or None to choose "
                     'automatically.')
  message = (f"implementation='pallas' ({kernel}) does not support {feature}; "
             f"running '{action}' instead.")
  if message not in _logged_fallbacks:
    _logged_fallbacks.add(message)
    logging.getLogger('attention').warning(message)
  return action


def _kernel_segment_ids(segment_ids, mask, query, key):
  """The (query [B, T], key [B, S]) ids a kernel takes, from either input."""
  if segment_ids is not None or mask is None:
    return segment_ids
  B, T, S = query.shape[0], query.shape[1], key.shape[1]
  mask4 = mask.reshape((1,) * (4 - mask.ndim) + mask.shape) != 0
  if _mask_kind(mask) == 'key':
    kv_segment_BS = jnp.broadcast_to(mask4[:, 0, 0, :], (B, S))
    return jnp.ones((B, T), jnp.int32), kv_segment_BS.astype(jnp.int32)
  q_segment_BT = jnp.broadcast_to(mask4[:, 0, :, 0], (B, T))
  return q_segment_BT.astype(jnp.int32), jnp.ones((B, S), jnp.int32)


def _segment_mask(q_segment_BT, kv_segment_BS):
  """bool [B, 1, T, S]: the same segment."""
  return q_segment_BT[:, None, :, None] == kv_segment_BS[:, None, None, :]


def _check_segment_ids(segment_ids, query, key):
  """None, or a (query [B, T], key [B, S]) pair (one array is used twice)."""
  if segment_ids is None:
    return None
  B, T, S = query.shape[0], query.shape[1], key.shape[1]
  if isinstance(segment_ids, (tuple, list)):
    if len(segment_ids) != 2:
      raise ValueError('dot_product_attention: segment_ids must be one [B, T] '
                       'array (self-attention) or a (query [B, T], key '
                       f'[B, S]) pair; got a sequence of {len(segment_ids)}.')
    pair = tuple(segment_ids)
  else:
    if T != S:
      raise ValueError('dot_product_attention: one segment_ids array serves '
                       f'self-attention only (T = S); got T={T}, S={S}. Give '
                       'a (query [B, T], key [B, S]) pair.')
    pair = (segment_ids, segment_ids)
  for name, ids, axes, length in (('query', pair[0], '[B, T]', T),
                                  ('key', pair[1], '[B, S]', S)):
    if (getattr(ids, 'shape', None) != (B, length)
        or not jnp.issubdtype(ids.dtype, jnp.integer)):
      raise ValueError(f'dot_product_attention: {name} segment ids must be '
                       f'int {axes} = {(B, length)}, got '
                       f'{getattr(ids, "dtype", type(ids))} '
                       f'{getattr(ids, "shape", "")}.')
  return pair


def _cudnn_attention(query, key, value, bias, mask, scale, dropout_active,
                     return_weights, platform):
  if platform != 'gpu':
    raise ValueError("implementation='cudnn' needs an NVIDIA GPU; this process "
                     f"runs on platform '{platform}'. Use 'xla' or 'chunked', "
                     'or None to choose automatically.')
  if return_weights or dropout_active:
    raise ValueError("implementation='cudnn' neither returns attention weights "
                     'nor applies dropout; use implementation=\'xla\' (or '
                     'None) for return_weights=True or dropout.')
  T, S = query.shape[1], key.shape[1]

  def as_4d(x):
    # cuDNN takes a mask or bias with the full [.., T, S] (it rejects a
    # broadcast key mask [B, 1, 1, S]); batch and heads may stay 1.
    if x is None:
      return None
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    return jnp.broadcast_to(x, x.shape[:2] + (T, S))
  mask4 = None if mask is None else masks_lib.combine_masks(as_4d(mask))
  out_BTNH = jax.nn.dot_product_attention(
      query, key, value, bias=as_4d(bias), mask=mask4, scale=scale,
      implementation='cudnn')
  if mask4 is not None:
    # jax.nn averages the values on fully masked rows; this package's policy
    # is a zero output there.
    row_valid_bnt1 = jnp.any(mask4, axis=-1, keepdims=True)
    row_valid_btn1 = jnp.transpose(row_valid_bnt1, (0, 2, 1, 3))
    out_BTNH = jnp.where(row_valid_btn1, out_BTNH, 0).astype(out_BTNH.dtype)
  return out_BTNH


def _check_args(query, key, value, bias, mask, dropout_rate, implementation):
  """ValueErrors that name what was expected and what was given."""
  where = 'dot_product_attention'
  for name, x in (('query', query), ('key', key), ('value', value)):
    if getattr(x, 'ndim', None) != 4:
      raise ValueError(f'{where}: {name} must be rank 4 '
                       f'({"[B, T, N, H]" if name == "query" else "[B, S, K, H]"}'
                       f'), got shape {getattr(x, "shape", type(x))}.')
  B, T, N, H = query.shape
  if key.shape[0] != B or value.shape[0] != B:
    raise ValueError(f'{where}: batch sizes differ: query {query.shape}, key '
                     f'{key.shape}, value {value.shape}.')
  if key.shape[1] != value.shape[1] or key.shape[2] != value.shape[2]:
    raise ValueError(f'{where}: key [B, S, K, H] and value [B, S, K, Hv] must '
                     f'agree on S and K, got {key.shape} and {value.shape}.')
  if key.shape[3] != H:
    raise ValueError(f'{where}: query and key head dims differ: query '
                     f'{query.shape}, key {key.shape}.')
  K = key.shape[2]
  if N % K:
    raise ValueError(f'{where}: the number of query heads N={N} must be '
                     f'divisible by the number of key/value heads K={K} '
                     f'(query {query.shape}, key {key.shape}).')
  S = key.shape[1]
  for name, x in (('mask', mask), ('bias', bias)):
    if x is not None and not _broadcasts_to(x.shape, (B, N, T, S)):
      raise ValueError(f'{where}: {name} of shape {x.shape} does not broadcast '
                       f'to [B, N, T, S] = {(B, N, T, S)}.')
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f'{where}: dropout_rate must be in [0, 1), got '
                     f'{dropout_rate}.')
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(f'{where}: unknown implementation {implementation!r}; '
                     f'expected one of {IMPLEMENTATIONS} or None.')


def _broadcasts_to(shape, target):
  if len(shape) > len(target):
    return False
  return all(a in (1, b) for a, b in zip(shape[::-1], target[::-1]))
