"""Tiling and block math shared by the forward and backward passes.

Block sizes and their defaults, the static configuration of a call, the tiles
of a query block, and the helpers that both passes apply to each block:
slicing chained to the previous block (``after``), padding, masking the
logits, dropout keep-masks and the float32-accumulating matmul. See the
package docstring (``attention/chunked/__init__.py``) for the algorithm.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

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


# ----------------------------------------------------------------------------
# Static configuration and tiling.


@dataclasses.dataclass(frozen=True)
class Config:
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


def row_tiles(T, S, bq, bk, causal, ragged, i):
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


def count_tiles(T, S, bq, bk, causal, ragged):
  return sum(len(row_tiles(T, S, bq, bk, causal, ragged, i))
             for i in range(-(-T // bq)))


# ----------------------------------------------------------------------------
# Per-block helpers of both passes.


def _never(x):
  """A scalar False that XLA cannot fold, computed from x's first element:
  nothing compares less than -inf, not even NaN."""
  return x.reshape(-1)[0] < -jnp.inf


def after(token, x, start, size, axis):
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


def materialized(*arrays):
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


def slice_axis(x, start, size, axis):
  """Static or dynamic slice along `axis`; size-1 (broadcast) axes stay."""
  if x.shape[axis] == 1:
    return x
  if isinstance(start, (int, np.integer)):
    return jax.lax.slice_in_dim(x, start, start + size, axis=axis)
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def pad_to(x, axis, size, front=0):
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
  x = slice_axis(slice_axis(x_bnts, t0, bt, 2), k0, bs, 3)
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


def mask_logits(cfg, s_BKxy, t0, bt, k0, bs, bias, mask_bias, causal,
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


def dropout_keep(cfg, rng, index, shape_BKrs):
  return jax.random.bernoulli(jax.random.fold_in(rng, index),
                              1.0 - cfg.dropout, shape_BKrs)


def einsum(cfg, spec, a, b):
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32,
                    precision=cfg.precision)


# ----------------------------------------------------------------------------
# The 'loop' schedule's ranges and key padding.


def loop_ranges(cfg, bq, bk, i):
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


def key_padding_bias(S, bk):
  """[S rounded up to bk] f32: 0 at real keys, -inf at padding; or None."""
  if S % bk == 0:
    return None
  Sp = -(-S // bk) * bk
  return jnp.asarray(np.where(np.arange(Sp) < S, 0.0, -np.inf), jnp.float32)
