"""Scaled dot-product attention with grouped-query heads, one function for all.

Each group of G = N // K consecutive query heads shares one key/value head.
Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

from attention import chunked as chunked_lib
from attention import masks as masks_lib

Array = jax.Array
Implementation = Literal['xla', 'chunked', 'cudnn'] | None

IMPLEMENTATIONS = ('xla', 'chunked', 'cudnn')


def dot_product_attention(query: Array,
                          key: Array,
                          value: Array,
                          *,
                          bias: Array | None = None,
                          mask: Array | None = None,
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
      (``jax.nn.dot_product_attention(implementation='cudnn')``, GPU only), or
      None for the best available on this platform: cuDNN where it supports
      the call, 'xla' when weights are requested, else 'chunked' where the
      matrix is large (on CPU from T·S = 128², where it was the faster at
      every length measured; on GPU/TPU from 1024²) and 'xla' below.
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
  dropout_active = dropout_rate > 0.0 and not deterministic
  if dropout_active and dropout_rng is None:
    raise ValueError('dot_product_attention: dropout is active '
                     f'(dropout_rate={dropout_rate}, deterministic=False) but '
                     'no dropout_rng was given.')
  if scale is None:
    scale = 1.0 / math.sqrt(query.shape[-1])
  if implementation is None:
    implementation = _best_implementation(query, key, value, dropout_active,
                                          return_weights, is_causal)
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
                            dropout_active, return_weights)
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
# benchmarks/train_step.py, so short sequences keep 'xla'. On GPU/TPU, where it
# is unmeasured here, 'chunked' takes over where the [B, N, T, S] matrix would
# be large.
_CHUNKED_MIN_LOGITS = {'cpu': 128 * 128, 'gpu': 1024 * 1024,
                       'tpu': 1024 * 1024}


def _best_implementation(query, key, value, dropout_active, return_weights,
                         is_causal=False):
  """The fastest path that supports the arguments on this platform.

  cuDNN on a GPU for the shapes and dtypes it supports; 'xla' whenever the
  weights are requested (only it builds the full matrix); otherwise
  'chunked' for long sequences (T·S at least ``_CHUNKED_MIN_LOGITS`` of the
  platform) and 'xla' for short ones.
  """
  del is_causal
  platform = jax.default_backend()
  H = query.shape[-1]
  cudnn_ok = (
      platform == 'gpu'
      and not dropout_active and not return_weights
      and query.dtype in (jnp.bfloat16, jnp.float16)
      and query.dtype == key.dtype == value.dtype
      and H == value.shape[-1] and H % 8 == 0 and H <= 128)
  if cudnn_ok:
    return 'cudnn'
  if return_weights:
    return 'xla'
  T, S = query.shape[1], key.shape[1]
  if T * S >= _CHUNKED_MIN_LOGITS.get(platform, 1024 * 1024):
    return 'chunked'
  return 'xla'


def _cudnn_attention(query, key, value, bias, mask, scale, dropout_active,
                     return_weights):
  platform = jax.default_backend()
  if platform != 'gpu':
    raise ValueError("implementation='cudnn' needs an NVIDIA GPU; this process "
                     f"runs on platform '{platform}'. Use 'xla' or 'chunked', "
                     'or None to choose automatically.')
  if return_weights or dropout_active:
    raise ValueError("implementation='cudnn' neither returns attention weights "
                     'nor applies dropout; use implementation=\'xla\' (or '
                     'None) for return_weights=True or dropout.')
  def as_4d(x):
    return None if x is None else x.reshape((1,) * (4 - x.ndim) + x.shape)
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
