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
buffers, see ``blocks.after``), and 'loop' uses ``lax.fori_loop`` over
blocks, so the program size does not grow with the length (chosen when the
unrolled program would have more than ``MAX_UNROLLED_BLOCKS`` blocks).

Layouts follow what XLA:CPU runs fastest (measured; see BENCHMARKS.md):
queries and keys head-dim-major ([B, K, H, positions]) for the logits
matmuls, values and the backward's other operands position-major, masks as
additive biases (0 or -inf) that fuse into the softmax. On CPU the unrolled
schedule writes the transposed operands once (``blocks.materialized``)
rather than letting XLA fuse the transposes into every block's slices.

Shapes use the package's axis legend (see attention/__init__.py). In a block,
t is a range of query positions, r = t·G its query rows (position-major,
head-in-group minor) and s a range of key positions.

Files, each importing only those above it:

  blocks.py    block sizes, tiling and the per-block helpers of both passes
  forward.py   the forward pass (online softmax), both schedules
  backward.py  the backward pass, both schedules
  flash.py     chunked_attention, default_chains and the custom_vjp
"""

from attention.chunked.blocks import BlockSizes
from attention.chunked.blocks import default_block_sizes
from attention.chunked.blocks import MAX_UNROLLED_BLOCKS
from attention.chunked.flash import chunked_attention
from attention.chunked.flash import default_chains
from attention.chunked.flash import Schedule

__all__ = ['BlockSizes', 'MAX_UNROLLED_BLOCKS', 'Schedule', 'chunked_attention',
           'default_block_sizes', 'default_chains']
