"""Memory-efficient (flash-style) attention in pure JAX, with its own backward.

``dot_product_attention(..., implementation='chunked')`` lands here. Queries
and keys are processed in blocks with an online softmax (running row maximum
and running row sum), so the [T, S] matrix of logits never exists; the forward
pass saves only the output and the float32 log-sum-exp of each query row, and
the backward pass (a ``jax.custom_vjp``) recomputes each block's weights from
them. Memory is O(block_q · block_k) per (batch, head) instead of O(T · S).

* Causal attention never computes the blocks above the diagonal; only the
  blocks that cross it are masked, and the backward pass trims the query rows
  of those blocks to the ones that can see any of their keys.
* Grouped-query attention (K < N) folds the G = N // K query heads of a group
  into the query rows of a block, so keys and values are never repeated.
* Masks and biases broadcastable to [B, N, T, S] are sliced per block (bias
  gradients are returned); a query row whose keys are all masked gives a zero
  output and zero gradients, never NaN.
* Dropout draws each block's keep-mask from ``fold_in(dropout_rng, block)``,
  so the backward pass regenerates exactly the forward pass's mask (same
  distribution as the 'xla' path, different bits).
* Lengths need not be multiples of the block sizes.
* On CPU a call is split over the batch (or key/value heads) into one
  independent computation per core (``default_chains``), which XLA runs side
  by side, filling cores that one computation leaves idle part of the time.

Two schedules run the same block computations: 'unrolled' writes the block
loops out at trace time (static shapes, so edge blocks are simply smaller and
causal masks are constants; blocks are chained so that XLA reuses their
buffers, see ``_after``), and 'loop' uses ``lax.fori_loop`` over blocks, so
the program size does not grow with the length (chosen when the unrolled
program would have more than ``MAX_UNROLLED_BLOCKS`` blocks).

Layouts follow what XLA:CPU runs fastest (measured; see BENCHMARKS.md):
queries and keys head-dim-major ([B, K, H, positions]) for the logits
matmuls, values and the backward's other operands position-major, masks as
additive biases (0 or -inf) that fuse into the softmax. On CPU the unrolled
schedule writes the transposed operands once (``_materialized``) rather than
letting XLA fuse the transposes into every block's slices.

Axis legend: B batch, T query length, S key length, N query heads, K key/value
heads, G = N // K, H head dim (Hv of values). In a block, t is a range of
query positions, r = t·G its query rows (position-major, head-in-group minor)
and s a range of key positions.
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

Array = jax.Array
Schedule = Literal['unrolled', 'loop']

# Programs with more blocks than this (forward and backward together) use the
# 'loop' schedule: compile time grows with the number of unrolled blocks.
MAX_UNROLLED_BLOCKS = 320


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Query and key positions per block, for each pass.

  The backward pass recomputes weights from the saved log-sum-exp, so its
  blocks need not match the forward pass's (except with dropout, whose masks
  are drawn per forward block: then the backward uses the forward's blocks).
  """
  q: int
  k: int
  q_bwd: int
  k_bwd: int


def default_block_sizes(T: int, S: int, H: int, is_causal: bool,
                        platform: str | None = None) -> BlockSizes:
  """Block sizes measured to be fastest for the platform and lengths.

  CPU (XLA:CPU, float32, H=64, T = S = 1024 causal and non-causal, swept over
  64..1024; see BENCHMARKS.md): the forward pass takes 128 queries x 512 keys
  (its p·v matmul contracts over the 512 keys, the long contraction that
  XLA:CPU runs fastest), the backward 512 queries x 128 keys (its pᵀ·do and
  dsᵀ·q contract over the 512 query rows); neighbouring sizes were within a
  few percent, 64-query or 1024-key forward blocks and 128x128 backward
  blocks slower. GPU/TPU: square blocks of 512, unmeasured (there the chunked
  path serves only calls that cuDNN cannot).
  """
  del H, is_causal
  platform = platform or jax.default_backend()
  if platform == 'cpu':
    return BlockSizes(q=min(T, 128), k=min(S, 512), q_bwd=min(T, 512),
                      k_bwd=min(S, 128))
  return BlockSizes(q=min(T, 512), k=min(S, 512), q_bwd=min(T, 512),
                    k_bwd=min(S, 512))


def default_chains(B: int, K: int, schedule: str = 'unrolled',
                   platform: str | None = None,
                   cores: int | None = None) -> int:
  """Independent computations to split a call into: one per CPU core.

  The blocks of one computation run one after another (they are chained to
  reuse buffers, see ``_after``), and XLA:CPU spreads a block's small
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
                      block_sizes: BlockSizes | None = None,
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
  sizes = block_sizes or default_block_sizes(T, S, H, is_causal)
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
  sizes = BlockSizes(q=min(int(sizes.q), T), k=min(int(sizes.k), S),
                     q_bwd=min(int(sizes.q_bwd), T),
                     k_bwd=min(int(sizes.k_bwd), S))
  causal = bool(is_causal)
  tiles_fwd = _count_tiles(T, S, sizes.q, sizes.k, causal, ragged=False)
  tiles_bwd = _count_tiles(T, S, sizes.q_bwd, sizes.k_bwd, causal,
                           ragged=not dropout)
  if schedule is None:
    schedule = ('unrolled' if tiles_fwd + tiles_bwd <= MAX_UNROLLED_BLOCKS
                else 'loop')
  G = N // K
  bias4 = None if bias is None else _as_4d(bias)
  mask_bias = None
  if mask is not None:  # Additive: 0 where kept, -inf where masked.
    mask4 = _as_4d(mask)
    keep = mask4 if mask4.dtype == jnp.bool_ else mask4 != 0
    mask_bias = jnp.where(keep, 0.0, -jnp.inf).astype(jnp.float32)
  cfg = _Config(T=T, S=S, G=G, sizes=sizes, causal=causal, dropout=dropout,
                schedule=schedule, precision=precision,
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
    qT_BKHR, kT_BKHS, v_BKSH = _materialized(qT_BKHR, kT_BKHS, v_BKSH)
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


# ----------------------------------------------------------------------------
# Static configuration and tiling.


@dataclasses.dataclass(frozen=True)
class _Config:
  T: int
  S: int
  G: int
  sizes: BlockSizes
  causal: bool
  dropout: float
  schedule: str
  precision: jax.lax.PrecisionLike
  bias_shape: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class _Tile:
  """Query positions [q0 + row_off, q0 + bt) against keys [k0, k0 + bs)."""
  q0: int
  bt: int
  row_off: int
  k0: int
  bs: int
  crosses_diagonal: bool
  index: int  # (query block, key block) on the grid, for dropout keys.


def _row_tiles(T, S, bq, bk, causal, ragged, i):
  """The tiles of query block i, in key order.

  Non-causal: the key grid up to S. Causal: the grid up to the block's last
  query, the last tile ending there; with ``ragged`` a tile that starts below
  the block's first query keeps only the rows at or after its first key.
  """
  q0, nk = i * bq, -(-S // bk)
  bt = min(bq, T - q0)
  end = min(S, q0 + bt) if causal else S
  tiles, k0 = [], 0
  while k0 < end:
    bs = min(bk, end - k0)
    row_off = max(0, k0 - q0) if causal and ragged else 0
    crosses = causal and k0 + bs - 1 > q0 + row_off
    tiles.append(_Tile(q0, bt, row_off, k0, bs, crosses, i * nk + k0 // bk))
    k0 += bs
  return tiles


def _count_tiles(T, S, bq, bk, causal, ragged):
  return sum(len(_row_tiles(T, S, bq, bk, causal, ragged, i))
             for i in range(-(-T // bq)))


def _never(x):
  """A scalar False that XLA cannot fold, computed from x's first element:
  nothing compares less than -inf, not even NaN."""
  return x.reshape(-1)[0] < -jnp.inf


def _materialized(*arrays):
  """The arrays, each written once into a buffer of its own.

  XLA:CPU fuses a cheap producer, such as a transpose, into each of its
  consumers. The unrolled schedule slices every operand once per block, so
  without this every block transposed its keys afresh: a strided gather of
  its slice out of the [B, S, K, H] input, which took a third of the forward
  pass's thread time at L=2048 non-causal (measured with jax.profiler; the
  forward ran 15-18% faster once the transposes were written once).
  ``lax.optimization_barrier`` does not stop that fusion (XLA:CPU removes
  barriers before fusing); a conditional does, since its operands must be
  buffers. The predicate is always true (``not _never``) but is not a
  constant, so XLA keeps the conditional; the other branch never runs. CPU
  only (on GPU a conditional costs a copy of the predicate to the host), and
  only when some operand is read by more than one block: a single block
  reads each operand once, and there the extra copy cost about 7% (L=128,
  forward+backward).
  """
  if arrays[0].size == 0:
    return arrays
  keep = jnp.logical_not(_never(arrays[0]))
  return jax.lax.cond(keep, lambda xs: xs,
                      lambda xs: tuple(jnp.zeros_like(x) for x in xs), arrays)


def _as_4d(x):
  x = jnp.asarray(x)
  return x.reshape((1,) * (4 - x.ndim) + x.shape)


def _slice(x, start, size, axis):
  """Static or dynamic slice along `axis`; size-1 (broadcast) axes stay."""
  if x.shape[axis] == 1:
    return x
  if isinstance(start, (int, np.integer)):
    return jax.lax.slice_in_dim(x, start, start + size, axis=axis)
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _pad_to(x, axis, size, front=0):
  """Zero-pads `axis` to `size` (after `front` leading zeros); size-1 stays."""
  if x is None or x.shape[axis] in (1, size):
    return x
  pad = [(0, 0)] * x.ndim
  pad[axis] = (front, size - x.shape[axis] - front)
  return jnp.pad(x, pad)


def _block_view(G, x_bnts, t0, bt, k0, bs, transposed):
  """The [t0:t0+bt, k0:k0+bs] block of a [b, n, T|1, S|1] array at rank 5,
  broadcastable to the logits viewed as [B, K, t, G, s] (or, transposed,
  [B, K, s, t, G])."""
  x = _slice(_slice(x_bnts, t0, bt, 2), k0, bs, 3)
  b, n, t, s = x.shape
  if n == 1:
    x5 = x.reshape(b, 1, t, 1, s)
  else:  # n = N = K·G, heads of a group consecutive.
    x5 = x.reshape(b, n // G, G, t, s).transpose(0, 1, 3, 2, 4)
  return x5.transpose(0, 1, 4, 2, 3) if transposed else x5


def _causal_bias(G, t0, bt, k0, bs, transposed):
  """f32 [t·G, s] (or [s, t·G]): 0 where key <= query position, else -inf."""
  if isinstance(t0, (int, np.integer)) and isinstance(k0, (int, np.integer)):
    # Static offsets: a constant, read instead of recomputed per element.
    q_pos = t0 + np.repeat(np.arange(bt), G)[:, None]
    k_pos = k0 + np.arange(bs)[None, :]
    bias = np.where(k_pos <= q_pos, 0.0, -np.inf).astype(np.float32)
    return jnp.asarray(bias.T if transposed else bias)
  shape = (bs, bt * G) if transposed else (bt * G, bs)
  q_axis, k_axis = (1, 0) if transposed else (0, 1)
  q_pos = t0 + jax.lax.broadcasted_iota(jnp.int32, shape, q_axis) // G
  k_pos = k0 + jax.lax.broadcasted_iota(jnp.int32, shape, k_axis)
  return jnp.where(k_pos <= q_pos, 0.0, -jnp.inf).astype(jnp.float32)


def _mask_logits(cfg, s_BKxy, t0, bt, k0, bs, bias, mask_bias, causal,
                 key_bias, transposed):
  """Adds the bias and -inf at excluded entries to a logits block.

  The block is [B, K, t·G, s], or [B, K, s, t·G] when transposed; t0/k0 are
  its first query/key positions. Masks arrive as additive biases (0 or -inf):
  XLA:CPU fuses an addition into the softmax that follows, where a select
  would cost a separate, slower pass over the block. `key_bias` ([S] f32)
  excludes the padded keys of the 'loop' schedule.
  """
  G = cfg.G
  small = _causal_bias(G, t0, bt, k0, bs, transposed) if causal else None
  if key_bias is not None:
    kb = jax.lax.dynamic_slice_in_dim(key_bias, k0, bs)
    kb = kb[:, None] if transposed else kb[None, :]
    small = kb if small is None else small + kb
  if bias is None and mask_bias is None:
    return s_BKxy if small is None else s_BKxy + small[None, None]
  B, K = s_BKxy.shape[:2]
  shape5 = (B, K, bs, bt, G) if transposed else (B, K, bt, G, bs)
  s5 = s_BKxy.reshape(shape5)
  for x in (bias, mask_bias):
    if x is not None:
      s5 = s5 + _block_view(G, x, t0, bt, k0, bs,
                            transposed).astype(jnp.float32)
  if small is not None:
    small = jnp.broadcast_to(small, (bs, bt * G) if transposed else
                             (bt * G, bs))
    s5 = s5 + small.reshape((1, 1) + shape5[2:])
  return s5.reshape(s_BKxy.shape)


def _dropout_keep(cfg, rng, index, shape_BKrs):
  return jax.random.bernoulli(jax.random.fold_in(rng, index),
                              1.0 - cfg.dropout, shape_BKrs)


def _einsum(cfg, spec, a, b):
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32,
                    precision=cfg.precision)


# ----------------------------------------------------------------------------
# Forward.


def _fwd_step(cfg, state, qT_BKHr, kT_BKHs, v_BKsH, bias, mask_bias, rng, t0,
              bt, k0, bs, causal, key_bias, index):
  """One online-softmax step: folds a key block into a query block's state."""
  m_BKr, l_BKr, acc_BKrH = state
  s_BKrs = _einsum(cfg, 'BKHr,BKHs->BKrs', qT_BKHr, kT_BKHs)
  s_BKrs = _mask_logits(cfg, s_BKrs, t0, bt, k0, bs, bias, mask_bias, causal,
                        key_bias, transposed=False)
  m_new_BKr = jnp.maximum(m_BKr, jnp.max(s_BKrs, axis=-1))
  # A row with no unmasked key so far keeps m = -inf: subtract 0 there, so
  # exp(-inf - 0) = 0 rather than exp(-inf + inf) = NaN.
  m_safe_BKr = jnp.where(m_new_BKr == -jnp.inf, 0.0, m_new_BKr)
  p_BKrs = jnp.exp(s_BKrs - m_safe_BKr[..., None])
  correction_BKr = jnp.exp(m_BKr - m_safe_BKr)
  l_new_BKr = l_BKr * correction_BKr + jnp.sum(p_BKrs, axis=-1)
  if rng is not None:
    keep_BKrs = _dropout_keep(cfg, rng, index, p_BKrs.shape)
    p_BKrs = jnp.where(keep_BKrs, p_BKrs * (1.0 / (1.0 - cfg.dropout)), 0.0)
  pv_BKrH = _einsum(cfg, 'BKrs,BKsH->BKrH', p_BKrs.astype(v_BKsH.dtype),
                    v_BKsH)
  return m_new_BKr, l_new_BKr, acc_BKrH * correction_BKr[..., None] + pv_BKrH


def _init_state(B, K, rows, Hv):
  return (jnp.full((B, K, rows), -jnp.inf, jnp.float32),
          jnp.zeros((B, K, rows), jnp.float32),
          jnp.zeros((B, K, rows, Hv), jnp.float32))


def _finish(state, dtype):
  """(out, lse) of a query block; rows that saw no key: 0 and lse = +inf."""
  m_BKr, l_BKr, acc_BKrH = state
  live_BKr = l_BKr > 0.0
  l_safe_BKr = jnp.where(live_BKr, l_BKr, 1.0)
  out_BKrH = jnp.where(live_BKr[..., None], acc_BKrH / l_safe_BKr[..., None],
                       0.0)
  lse_BKr = jnp.where(live_BKr, m_BKr + jnp.log(l_safe_BKr), jnp.inf)
  return out_BKrH.astype(dtype), lse_BKr


def _after(token, x, start, size, axis):
  """x[start:start + size] along `axis`, computed only once `token` is.

  The blocks of a pass are chained this way, each slicing its operands only
  after the previous block's result exists. Unchained, XLA's scheduler starts
  the matmuls of all blocks at once and keeps all their buffers alive
  together: hundreds of MB that XLA:CPU maps afresh, page by page, on every
  call (measured for causal L=1024, B=8: 5x the temporary memory and 20-25%
  more time, forward or forward+backward). Chained, the blocks reuse a few
  buffers. The dependency is an offset that is always 0 but that XLA cannot
  fold (``_never``).
  """
  if token is None:
    return jax.lax.slice_in_dim(x, start, start + size, axis=axis)
  zero = _never(token).astype(jnp.int32)
  return jax.lax.dynamic_slice_in_dim(x, start + zero, size, axis=axis)


def _forward_unrolled(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  B, K = qT_BKHR.shape[:2]
  Hv, G, bq = v_BKSH.shape[-1], cfg.G, cfg.sizes.q
  token = None  # The last block's result: see _after.
  outs, lses = [], []
  for i in range(-(-cfg.T // bq)):
    q0, bt = i * bq, min(bq, cfg.T - i * bq)
    qT_BKHr = _after(token, qT_BKHR, q0 * G, bt * G, 3)
    state = _init_state(B, K, bt * G, Hv)
    for tile in _row_tiles(cfg.T, cfg.S, bq, cfg.sizes.k, cfg.causal, False,
                           i):
      k0, bs = tile.k0, tile.bs
      state = _fwd_step(cfg, state, qT_BKHr, _after(token, kT_BKHS, k0, bs, 3),
                        _after(token, v_BKSH, k0, bs, 2), bias, mask_bias, rng,
                        q0, bt, k0, bs, tile.crosses_diagonal, None,
                        tile.index)
      token = state[1]
    out, lse = _finish(state, qT_BKHR.dtype)
    outs.append(out)
    lses.append(lse)
  return jnp.concatenate(outs, axis=2), jnp.concatenate(lses, axis=2)


def _loop_ranges(cfg, bq, bk, i):
  """Key blocks [0, n_free) of query block i need no causal or padding mask;
  [n_free, n_end) do."""
  nk = -(-cfg.S // bk)
  last_padded = 1 if cfg.S % bk else 0
  if cfg.causal:
    n_end = jnp.minimum(nk, ((i + 1) * bq - 1) // bk + 1)
    n_free = jnp.minimum((i * bq + 1) // bk, n_end)
  else:
    n_end = n_free = nk
  return jnp.minimum(n_free, nk - last_padded), n_end


def _padded(cfg, bq, bk, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias):
  Tp, Sp = -(-cfg.T // bq) * bq, -(-cfg.S // bk) * bk
  return (_pad_to(qT_BKHR, 3, Tp * cfg.G), _pad_to(kT_BKHS, 3, Sp),
          _pad_to(v_BKSH, 2, Sp), _pad_to(_pad_to(bias, 2, Tp), 3, Sp),
          _pad_to(_pad_to(mask_bias, 2, Tp), 3, Sp))


def _key_padding_bias(S, bk):
  """[S rounded up to bk] f32: 0 at real keys, -inf at padding; or None."""
  if S % bk == 0:
    return None
  Sp = -(-S // bk) * bk
  return jnp.asarray(np.where(np.arange(Sp) < S, 0.0, -np.inf), jnp.float32)


def _forward_loop(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  B, K, _, R = qT_BKHR.shape
  Hv, G, bq, bk = v_BKSH.shape[-1], cfg.G, cfg.sizes.q, cfg.sizes.k
  nq, nk = -(-cfg.T // bq), -(-cfg.S // bk)
  qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias = _padded(
      cfg, bq, bk, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias)
  key_bias = _key_padding_bias(cfg.S, bk)

  def q_block(i, carry):
    out_BKRH, lse_BKR = carry
    qT_BKHr = jax.lax.dynamic_slice_in_dim(qT_BKHR, i * bq * G, bq * G, 3)

    def k_block(masked):
      def body(j, state):
        kT_BKHs = jax.lax.dynamic_slice_in_dim(kT_BKHS, j * bk, bk, axis=3)
        v_BKsH = jax.lax.dynamic_slice_in_dim(v_BKSH, j * bk, bk, axis=2)
        return _fwd_step(cfg, state, qT_BKHr, kT_BKHs, v_BKsH, bias,
                         mask_bias, rng, i * bq, bq, j * bk, bk,
                         masked and cfg.causal, key_bias if masked else None,
                         i * nk + j)
      return body

    n_free, n_end = _loop_ranges(cfg, bq, bk, i)
    state = _init_state(B, K, bq * G, Hv)
    state = jax.lax.fori_loop(0, n_free, k_block(False), state)
    state = jax.lax.fori_loop(n_free, n_end, k_block(True), state)
    out, lse = _finish(state, out_BKRH.dtype)
    return (jax.lax.dynamic_update_slice_in_dim(out_BKRH, out, i * bq * G, 2),
            jax.lax.dynamic_update_slice_in_dim(lse_BKR, lse, i * bq * G, 2))

  init = (jnp.zeros((B, K, nq * bq * G, Hv), qT_BKHR.dtype),
          jnp.zeros((B, K, nq * bq * G), jnp.float32))
  out_BKRH, lse_BKR = jax.lax.fori_loop(0, nq, q_block, init)
  return out_BKRH[:, :, :R], lse_BKR[:, :, :R]


def _forward(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  run = _forward_unrolled if cfg.schedule == 'unrolled' else _forward_loop
  return run(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng)


# ----------------------------------------------------------------------------
# Backward: recompute each block's weights from the saved log-sum-exp.


def _bwd_step(cfg, qT_BKHr, q_BKrH, kT_BKHs, vT_BKHs, do_BKrH, doT_BKHr,
              lse_BKr, delta_BKr, bias, mask_bias, rng, t0, bt, k0, bs, causal,
              key_bias, index):
  """Gradient contributions of one block: dqᵀ, dk, dv and d(logits)ᵀ.

  The logits are recomputed transposed, [B, K, s, r], and every operand comes
  in the layout that makes its matmul a fast one on XLA:CPU: the head dim
  major for the two logits-shaped products, the contraction major for the
  other three (dq is produced transposed, [B, K, H, r]).
  """
  st_BKsr = _einsum(cfg, 'BKHs,BKHr->BKsr', kT_BKHs, qT_BKHr)
  st_BKsr = _mask_logits(cfg, st_BKsr, t0, bt, k0, bs, bias, mask_bias,
                         causal, key_bias, transposed=True)
  pt_BKsr = jnp.exp(st_BKsr - lse_BKr[:, :, None, :])
  dpt_BKsr = _einsum(cfg, 'BKHs,BKHr->BKsr', vT_BKHs, doT_BKHr)
  dropped_BKsr = pt_BKsr
  if rng is not None:
    B, K, s, r = pt_BKsr.shape
    keep_BKsr = _dropout_keep(cfg, rng, index, (B, K, r, s)).transpose(
        0, 1, 3, 2)
    inverse_keep = 1.0 / (1.0 - cfg.dropout)
    dropped_BKsr = jnp.where(keep_BKsr, pt_BKsr * inverse_keep, 0.0)
    dpt_BKsr = jnp.where(keep_BKsr, dpt_BKsr * inverse_keep, 0.0)
  dv_BKsH = _einsum(cfg, 'BKsr,BKrH->BKsH', dropped_BKsr.astype(do_BKrH.dtype),
                    do_BKrH)
  dst_BKsr = pt_BKsr * (dpt_BKsr - delta_BKr[:, :, None, :])
  ds_BKsr = dst_BKsr.astype(q_BKrH.dtype)
  dqT_BKHr = _einsum(cfg, 'BKHs,BKsr->BKHr', kT_BKHs, ds_BKsr)
  dk_BKsH = _einsum(cfg, 'BKsr,BKrH->BKsH', ds_BKsr, q_BKrH)
  return dqT_BKHr, dk_BKsH, dv_BKsH, dst_BKsr


def _backward_layouts(res, do_BKRH):
  """The saved tensors plus the other layouts that the backward matmuls read."""
  qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng, out_BKRH, lse_BKR = res
  delta_BKR = jnp.sum(do_BKRH.astype(jnp.float32)
                      * out_BKRH.astype(jnp.float32), axis=-1)
  layouts = (qT_BKHR, jnp.swapaxes(qT_BKHR, 2, 3), kT_BKHS,
             jnp.swapaxes(v_BKSH, 2, 3), do_BKRH, jnp.swapaxes(do_BKRH, 2, 3))
  return dict(zip(('qT', 'q', 'kT', 'vT', 'do', 'doT'), layouts), lse=lse_BKR,
              delta=delta_BKR, bias=bias, mask_bias=mask_bias, rng=rng,
              v=v_BKSH)


def _reduce_to(x, shape):
  """Sums the axes of x that `shape` broadcasts (size 1) down to size 1."""
  axes = tuple(a for a, (n, m) in enumerate(zip(shape, x.shape)) if n != m)
  return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _dbias_block(cfg, dst_BKsr, bt, bs):
  """d(logits)ᵀ [B, K, s, t·G] -> [b, n, t|1, s|1] of the bias's shape."""
  B, K = dst_BKsr.shape[:2]
  G = cfg.G
  d_BNts = (dst_BKsr.reshape(B, K, bs, bt, G).transpose(0, 1, 4, 3, 2)
            .reshape(B, K * G, bt, bs))
  b, n, t, s = cfg.bias_shape
  return _reduce_to(d_BNts, (b, n, bt if t > 1 else 1, bs if s > 1 else 1))


def _backward_unrolled(cfg, res, do_BKRH):
  x = _backward_layouts(res, do_BKRH)
  G, bq, bk = cfg.G, cfg.sizes.q_bwd, cfg.sizes.k_bwd
  B, K, H, _ = x['qT'].shape
  Hv = x['v'].shape[-1]
  ragged = not cfg.dropout
  nk = -(-cfg.S // bk)
  dqTs, dbias_rows = [], []
  dks, dvs = [[] for _ in range(nk)], [[] for _ in range(nk)]
  token = None  # The last block's result: see _after.
  for i in range(-(-cfg.T // bq)):
    q0, bt = i * bq, min(bq, cfg.T - i * bq)
    dqT_BKHr, dbias_cols = None, []
    # The query side of the row, sliced once; ragged tiles take sub-slices.
    row = {name: _after(token, x[name], q0 * G, bt * G, axis)
           for name, axis in (('qT', 3), ('q', 2), ('do', 2), ('doT', 3),
                              ('lse', 2), ('delta', 2))}
    for tile in _row_tiles(cfg.T, cfg.S, bq, bk, cfg.causal, ragged, i):
      t0, k0, bs = q0 + tile.row_off, tile.k0, tile.bs
      r0 = tile.row_off * G
      sub = {name: jax.lax.slice_in_dim(a, r0, bt * G, axis=a.ndim - 1 if
                                        name in ('qT', 'doT', 'lse', 'delta')
                                        else 2) if r0 else a
             for name, a in row.items()}
      dqT, dk, dv, dst = _bwd_step(
          cfg, sub['qT'], sub['q'], _after(token, x['kT'], k0, bs, 3),
          _after(token, x['vT'], k0, bs, 3), sub['do'], sub['doT'],
          sub['lse'], sub['delta'], x['bias'], x['mask_bias'], x['rng'], t0,
          q0 + bt - t0, k0, bs, tile.crosses_diagonal, None, tile.index)
      token = dk
      dqT = _pad_to(dqT, 3, bt * G, front=tile.row_off * G)
      dqT_BKHr = dqT if dqT_BKHr is None else dqT_BKHr + dqT
      dks[k0 // bk].append(dk)
      dvs[k0 // bk].append(dv)
      if cfg.bias_shape is not None:
        dbias = _dbias_block(cfg, dst, q0 + bt - t0, bs)
        dbias_cols.append(_pad_to(dbias, 2, bt, front=tile.row_off))
    dqTs.append(dqT_BKHr)
    if cfg.bias_shape is not None:
      dbias_rows.append(_join_columns(cfg, dbias_cols))

  def assemble(parts, features):
    blocks = []
    for j in range(nk):
      size = min(bk, cfg.S - j * bk)
      total = None
      for part in parts[j]:  # A diagonal tile may end early: pad it.
        part = _pad_to(part, 2, size)
        total = part if total is None else total + part
      if total is None:  # Causal with S > T: keys that no query sees.
        total = jnp.zeros((B, K, size, features), jnp.float32)
      blocks.append(total)
    return jnp.concatenate(blocks, axis=2)

  dbias = None
  if cfg.bias_shape is not None:
    dbias = _reduce_to(jnp.concatenate(dbias_rows, axis=2), cfg.bias_shape)
  return (jnp.concatenate(dqTs, axis=3),
          jnp.swapaxes(assemble(dks, H), 2, 3), assemble(dvs, Hv), dbias)


def _join_columns(cfg, cols):
  """A query block's dbias tiles joined along keys (zeros where skipped)."""
  if cfg.bias_shape[3] == 1:
    return functools.reduce(jnp.add, cols)
  return _pad_to(jnp.concatenate(cols, axis=3), 3, cfg.S)


def _backward_loop(cfg, res, do_BKRH):
  x = _backward_layouts(res, do_BKRH)
  B, K, H, R = x['qT'].shape
  Hv, G, bq, bk = x['v'].shape[-1], cfg.G, cfg.sizes.q_bwd, cfg.sizes.k_bwd
  nq, nk = -(-cfg.T // bq), -(-cfg.S // bk)
  Rp, Sp = nq * bq * G, nk * bk
  for name, axis, size in (('qT', 3, Rp), ('q', 2, Rp), ('kT', 3, Sp),
                           ('vT', 3, Sp), ('do', 2, Rp), ('doT', 3, Rp),
                           ('lse', 2, Rp), ('delta', 2, Rp)):
    x[name] = _pad_to(x[name], axis, size)
  for name in ('bias', 'mask_bias'):
    x[name] = _pad_to(_pad_to(x[name], 2, nq * bq), 3, Sp)
  key_bias = _key_padding_bias(cfg.S, bk)
  with_bias = cfg.bias_shape is not None

  def q_block(i, carry):
    dqT_BKHR, dk_BKSH, dv_BKSH, dbias = carry
    r0, rows = i * bq * G, bq * G
    qT, doT = (jax.lax.dynamic_slice_in_dim(x[n], r0, rows, 3)
               for n in ('qT', 'doT'))
    q, do, lse, delta = (jax.lax.dynamic_slice_in_dim(x[n], r0, rows, 2)
                         for n in ('q', 'do', 'lse', 'delta'))

    def k_block(masked):
      def body(j, state):
        dqT_BKHr, dk_BKSH, dv_BKSH, dbias = state
        kT, vT = (jax.lax.dynamic_slice_in_dim(x[n], j * bk, bk, 3)
                  for n in ('kT', 'vT'))
        dqT, dk, dv, dst = _bwd_step(
            cfg, qT, q, kT, vT, do, doT, lse, delta, x['bias'],
            x['mask_bias'], x['rng'], i * bq, bq, j * bk, bk,
            masked and cfg.causal, key_bias if masked else None, i * nk + j)
        dk_BKSH = _add_at(dk_BKSH, dk, 2, j * bk)
        dv_BKSH = _add_at(dv_BKSH, dv, 2, j * bk)
        if with_bias:
          dbias = _add_at(dbias, _dbias_block(cfg, dst, bq, bk), 2, i * bq,
                          3, j * bk)
        return dqT_BKHr + dqT, dk_BKSH, dv_BKSH, dbias
      return body

    n_free, n_end = _loop_ranges(cfg, bq, bk, i)
    state = (jnp.zeros((B, K, H, rows), jnp.float32), dk_BKSH, dv_BKSH,
             dbias)
    state = jax.lax.fori_loop(0, n_free, k_block(False), state)
    state = jax.lax.fori_loop(n_free, n_end, k_block(True), state)
    dqT, dk_BKSH, dv_BKSH, dbias = state
    dqT_BKHR = jax.lax.dynamic_update_slice_in_dim(dqT_BKHR, dqT, r0, 3)
    return dqT_BKHR, dk_BKSH, dv_BKSH, dbias

  dbias0 = None
  if with_bias:
    dbias0 = jnp.zeros(x['bias'].shape, jnp.float32)
  init = (jnp.zeros((B, K, H, Rp), jnp.float32),
          jnp.zeros((B, K, Sp, H), jnp.float32),
          jnp.zeros((B, K, Sp, Hv), jnp.float32), dbias0)
  dqT, dk, dv, dbias = jax.lax.fori_loop(0, nq, q_block, init)
  if with_bias:
    dbias = _reduce_to(_slice(_slice(dbias, 0, cfg.T, 2), 0, cfg.S, 3),
                       cfg.bias_shape)
  return (dqT[..., :R], jnp.swapaxes(dk[:, :, :cfg.S], 2, 3),
          dv[:, :, :cfg.S], dbias)


def _add_at(x, update, *axes_and_starts):
  """x with `update` added at the given (axis, start) pairs; size-1 axes of x
  (broadcast) take the update as is."""
  starts = [0] * x.ndim
  for axis, start in zip(axes_and_starts[::2], axes_and_starts[1::2]):
    if x.shape[axis] > 1:
      starts[axis] = start
  starts = [jnp.asarray(s, jnp.int32) for s in starts]
  current = jax.lax.dynamic_slice(x, starts, update.shape)
  return jax.lax.dynamic_update_slice(x, current + update, starts)


def _backward(cfg, res, do_BKRH):
  run = _backward_unrolled if cfg.schedule == 'unrolled' else _backward_loop
  return run(cfg, res, do_BKRH)


# ----------------------------------------------------------------------------
# The custom_vjp.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  return _forward(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng)[0]


def _flash_fwd(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  out_BKRH, lse_BKR = _forward(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias,
                               mask_bias, rng)
  return out_BKRH, (qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng, out_BKRH,
                    lse_BKR)


def _flash_bwd(cfg, res, do_BKRH):
  qT_BKHR, kT_BKHS, v_BKSH, bias = res[:4]
  dqT, dkT, dv, dbias = _backward(cfg, res, do_BKRH)
  return (dqT.astype(qT_BKHR.dtype), dkT.astype(kT_BKHS.dtype),
          dv.astype(v_BKSH.dtype),
          None if bias is None else dbias.astype(bias.dtype), None, None)


_flash.defvjp(_flash_fwd, _flash_bwd)
