"""``chunked_attention``: argument checks, layouts, the split into
independent computations (``default_chains``), and the ``jax.custom_vjp``
that joins the forward pass (``forward.py``) to its backward (``backward.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from attention.chunked import backward
from attention.chunked import blocks
from attention.chunked import forward

Array = jax.Array
Schedule = Literal['unrolled', 'loop']


def default_chains(B: int, K: int, schedule: str = 'unrolled',
                   platform: str | None = None,
                   cores: int | None = None) -> int:
  """Independent computations to split a call into: one per CPU core.

  The blocks of one computation run one after another (they are chained to
  reuse buffers, see ``blocks.after``), and XLA:CPU spreads a block's small
  matmuls and softmax over the cores only in part: profiled at L=2048
  non-causal forward+backward on 2 cores, one computation kept 1.4 of them
  busy on average, two computations 1.6. Split into independent
  computations (over the batch or the key/value heads), the unrolled
  schedule's blocks fill more of the gaps. Measured on the 2-core
  development machine (float32, N=8, H=64, forward+backward, against one
  computation): 2 computations took 0.92x the time at L=512 causal, 0.91x at
  L=2048 non-causal and 0.94x at L=1024 causal (4: 0.87x there, but twice the
  compile time). The 'loop' schedule's while loops do not overlap (L=8192,
  B=1: 1.04x with 2), and on GPU/TPU one kernel per block already fills the
  device: 1 there. At most 4 (compile time grows with the count).
  """
  platform = platform or jax.default_backend()
  if platform != 'cpu' or schedule != 'unrolled':
    return 1
  cores = cores or os.cpu_count() or 1
  return max(1, min(B * K, cores, 4))


def _chain_split(B, K, chains):
  """(axis, count): split [B, K, ...] layouts along B if `chains` divides B,
  else along K; fewer chains when neither divides."""
  for n in range(min(chains, B * K), 1, -1):
    if B % n == 0:
      return 0, n
    if K % n == 0:
      return 1, n
  return 0, 1


def _chain_part(x, axis, index, count):
  """Chain `index` of `count` of a [B, K, ...] layout, or of a [b, n, t, s]
  bias/mask (whose head axis holds K·G heads, or 1 when broadcast)."""
  if x is None or x.shape[axis] == 1:
    return x
  size = x.shape[axis] // count
  return jax.lax.slice_in_dim(x, index * size, (index + 1) * size, axis=axis)


def chunked_attention(query: Array,
                      key: Array,
                      value: Array,
                      *,
                      bias: Array | None = None,
                      mask: Array | None = None,
                      is_causal: bool = False,
                      scale: float | None = None,
                      dropout_rate: float = 0.0,
                      dropout_rng: Array | None = None,
                      block_q: int | None = None,
                      block_k: int | None = None,
                      block_sizes: blocks.BlockSizes | None = None,
                      schedule: Schedule | None = None,
                      chains: int | None = None,
                      precision: jax.lax.PrecisionLike = None) -> Array:
  """Blockwise softmax(scale · q·kᵀ + bias, masked) · v with a custom backward.

  Prefer ``dot_product_attention(..., implementation='chunked')``, which
  validates the arguments; call this directly to set block sizes or the
  schedule.

  Args:
    query: [B, T, N, H].
    key: [B, S, K, H], N divisible by K.
    value: [B, S, K, Hv].
    bias: float, broadcastable to [B, N, T, S], added to the logits.
    mask: bool (or nonzero = keep), broadcastable to [B, N, T, S].
    is_causal: query ``i`` may attend to key ``j`` iff ``j <= i`` (top-left
      aligned, as in ``jax.nn.dot_product_attention``).
    scale: logit scale, default ``1 / sqrt(H)``.
    dropout_rate: dropout on the attention weights, in [0, 1), applied when
      > 0 (there is no ``deterministic`` flag here).
    dropout_rng: PRNG key, required when ``dropout_rate > 0``.
    block_q: query positions per block in both passes (overrides
      ``block_sizes``).
    block_k: key positions per block in both passes.
    block_sizes: per-pass block sizes; default :func:`default_block_sizes`.
    schedule: 'unrolled', 'loop', or None to choose by the number of blocks.
    chains: split the batch (or, when it does not divide, the key/value heads)
      into this many independent computations, which XLA runs side by side;
      None = :func:`default_chains`. 1 = one computation.
    precision: matmul precision.

  Returns:
    [B, T, N, Hv] in the query's dtype.
  """
  where = 'chunked_attention'
  if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
    raise ValueError(f'{where}: expected rank-4 query [B, T, N, H], key '
                     '[B, S, K, H] and value [B, S, K, Hv], got shapes '
                     f'{query.shape}, {key.shape}, {value.shape}.')
  B, T, N, H = query.shape
  S, K, Hv = key.shape[1], key.shape[2], value.shape[-1]
  if (N % K or key.shape[:3] != value.shape[:3] or key.shape[0] != B
      or key.shape[-1] != H):
    raise ValueError(f'{where}: expected query [B, T, N, H], key [B, S, K, H] '
                     'and value [B, S, K, Hv] with N divisible by K, got '
                     f'{query.shape}, {key.shape}, {value.shape}.')
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f'{where}: dropout_rate must be in [0, 1), got '
                     f'{dropout_rate}.')
  if dropout_rate > 0.0 and dropout_rng is None:
    raise ValueError(f'{where}: dropout_rate={dropout_rate} needs a '
                     'dropout_rng.')
  if chains is not None and (not isinstance(chains, (int, np.integer))
                             or chains < 1):
    raise ValueError(f'{where}: chains must be a positive int or None, got '
                     f'{chains!r}.')
  if schedule not in (None, 'unrolled', 'loop'):
    raise ValueError(f"{where}: schedule must be 'unrolled', 'loop' or None, "
                     f'got {schedule!r}.')
  sizes = block_sizes or blocks.default_block_sizes(T, S, H, is_causal)
  sizes = dataclasses.replace(
      sizes, **({} if block_q is None else {'q': block_q, 'q_bwd': block_q}),
      **({} if block_k is None else {'k': block_k, 'k_bwd': block_k}))
  for name, size in dataclasses.asdict(sizes).items():
    if not isinstance(size, (int, np.integer)) or size < 1:
      raise ValueError(f'{where}: block size {name} must be a positive int, '
                       f'got {size!r}.')
  dropout = float(dropout_rate) if dropout_rate > 0.0 else 0.0
  if dropout:  # Masks are drawn per forward block: both passes share them.
    sizes = dataclasses.replace(sizes, q_bwd=sizes.q, k_bwd=sizes.k)
  sizes = blocks.BlockSizes(q=min(int(sizes.q), T), k=min(int(sizes.k), S),
                            q_bwd=min(int(sizes.q_bwd), T),
                            k_bwd=min(int(sizes.k_bwd), S))
  causal = bool(is_causal)
  tiles_fwd = blocks.count_tiles(T, S, sizes.q, sizes.k, causal, ragged=False)
  tiles_bwd = blocks.count_tiles(T, S, sizes.q_bwd, sizes.k_bwd, causal,
                                 ragged=not dropout)
  if schedule is None:
    schedule = ('unrolled'
                if tiles_fwd + tiles_bwd <= blocks.MAX_UNROLLED_BLOCKS
                else 'loop')
  G = N // K
  bias4 = None if bias is None else _as_4d(bias)
  mask_bias = None
  if mask is not None:  # Additive: 0 where kept, -inf where masked.
    mask4 = _as_4d(mask)
    keep = mask4 if mask4.dtype == jnp.bool_ else mask4 != 0
    mask_bias = jnp.where(keep, 0.0, -jnp.inf).astype(jnp.float32)
  cfg = blocks.Config(T=T, S=S, G=G, sizes=sizes, causal=causal,
                      dropout=dropout, schedule=schedule, precision=precision,
                      bias_shape=None if bias4 is None else bias4.shape)

  scale = 1.0 / math.sqrt(H) if scale is None else float(scale)
  # Queries and keys go in head-dim-major ([..., H, positions]): XLA:CPU runs
  # the logits matmul q·kᵀ fastest with both operands that way. The G heads
  # of a group become query rows: [B, T, N, H] -> [B, K, H, T·G]. The scale
  # is folded into q, in q's dtype.
  qT_BKHR = (query.reshape(B, T, K, G, H).transpose(0, 2, 4, 1, 3)
             .reshape(B, K, H, T * G)) * jnp.asarray(scale, query.dtype)
  kT_BKHS = key.transpose(0, 2, 3, 1)
  v_BKSH = value.transpose(0, 2, 1, 3)
  if (schedule == 'unrolled' and jax.default_backend() == 'cpu'
      and max(tiles_fwd, tiles_bwd) > 1):
    qT_BKHR, kT_BKHS, v_BKSH = blocks.materialized(qT_BKHR, kT_BKHS, v_BKSH)
  rng = dropout_rng if dropout else None
  axis, n = _chain_split(B, K, default_chains(B, K, schedule) if chains is None
                         else int(chains))
  if n == 1:
    out_BKRH = _flash(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias4, mask_bias, rng)
  else:
    # Every chain's bias has the same shape.
    chain_bias = _chain_part(bias4, axis, 0, n)
    chain_cfg = dataclasses.replace(
        cfg, bias_shape=None if chain_bias is None else chain_bias.shape)
    parts = []
    for c in range(n):
      part = functools.partial(_chain_part, axis=axis, index=c, count=n)
      parts.append(_flash(
          chain_cfg, part(qT_BKHR), part(kT_BKHS), part(v_BKSH), part(bias4),
          part(mask_bias), None if rng is None else jax.random.fold_in(rng, c)))
    out_BKRH = jnp.concatenate(parts, axis=axis)
  return (out_BKRH.reshape(B, K, T, G, Hv).transpose(0, 2, 1, 3, 4)
          .reshape(B, T, N, Hv))


def _as_4d(x):
  x = jnp.asarray(x)
  return x.reshape((1,) * (4 - x.ndim) + x.shape)


# ----------------------------------------------------------------------------
# The custom_vjp.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  return forward.forward(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng)[0]


def _flash_fwd(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  out_BKRH, lse_BKR = forward.forward(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias,
                                      mask_bias, rng)
  return out_BKRH, (qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng, out_BKRH,
                    lse_BKR)


def _flash_bwd(cfg, res, do_BKRH):
  qT_BKHR, kT_BKHS, v_BKSH, bias = res[:4]
  dqT, dkT, dv, dbias = backward.backward(cfg, res, do_BKRH)
  return (dqT.astype(qT_BKHR.dtype), dkT.astype(kT_BKHS.dtype),
          dv.astype(v_BKSH.dtype),
          None if bias is None else dbias.astype(bias.dtype), None, None)


_flash.defvjp(_flash_fwd, _flash_bwd)
