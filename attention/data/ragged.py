"""Ragged arrays: a list of arrays of different lengths, stored flat.

The batch sources (`TranslationSplit`, `MovieSplit`) keep their token and
item sequences as a `Ragged` built once when the split is made, so that
collating a batch is a few NumPy gathers instead of a Python loop over its
rows (the input pipeline collates every training batch).

    seqs = Ragged([np.array([5, 6, 7]), np.array([8])])
    seqs.padded(np.array([1, -1, 0]), 4)
    # [[8, 0, 0, 0], [0, 0, 0, 0], [5, 6, 7, 0]]   (row -1: all padding)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Ragged:
  """Arrays a_0..a_{N-1} of different lengths (axis 0), stored as one array.

  Attributes:
    values: a_0, ..., a_{N-1} concatenated along axis 0.
    starts: int [N], where each array starts in `values`.
    lengths: int [N], len(a_i).

  `starts` and `lengths` are int32 when `values` has fewer than 2**31
  elements (else int64): index arithmetic on a batch then moves half the
  bytes.
  """

  def __init__(self, arrays: Sequence[np.ndarray], dtype=None,
               item_shape: tuple[int, ...] = ()):
    """Concatenates `arrays` (each [len_i, *item_shape]) once, as `dtype`."""
    lengths = np.array([len(a) for a in arrays], np.int64)
    if len(arrays):
      values = np.concatenate(
          [np.reshape(a, (-1, *item_shape)) for a in arrays])
    else:
      values = np.zeros((0, *item_shape), dtype or np.int32)
    self.values = values.astype(dtype, copy=False) if dtype else values
    index = np.int32 if len(self.values) < 2**31 else np.int64
    self.lengths = lengths.astype(index)
    self.starts = (np.cumsum(lengths) - lengths).astype(index)

  def __len__(self) -> int:
    return len(self.lengths)

  def padded(self, rows: np.ndarray, pad_len: int, *,
             start: np.ndarray | None = None,
             count: np.ndarray | None = None) -> np.ndarray:
    """[B, pad_len, *item_shape]: some of each array of `rows`, then zeros.

    Row r holds `count[r]` elements of array `rows[r]` from its position
    `start[r]`, then zeros; a row of -1 is all zeros.

    Args:
      rows: int [B], array indices (-1 = padding row).
      pad_len: the padded length; must be >= every count.
      start: int [B], the first element taken of each array (default 0).
      count: int [B], how many elements (default: the rest of the array).

    Returns:
      The padded elements, of the dtype of `values`.
    """
    rows = np.asarray(rows)
    real = rows >= 0
    i = np.where(real, rows, 0)
    first = self.starts[i]
    if start is not None:
      first = first + np.asarray(start, first.dtype)
    if count is None:
      count = self.starts[i] + self.lengths[i] - first
    count = np.where(real, count, 0).astype(first.dtype)
    if count.size and int(count.max()) > pad_len:
      raise ValueError(f'An example needs {int(count.max())} positions, more '
                       f'than the padded length {pad_len}.')
    if not len(self.values):
      return np.zeros((len(rows), pad_len, *self.values.shape[1:]),
                      self.values.dtype)
    positions = np.arange(pad_len, dtype=first.dtype)
    # Gather whole rows (indices past the end clipped), then zero the tails.
    out = self.values.take(first[:, None] + positions, axis=0, mode='clip')
    keep = positions < count[:, None]
    out *= keep.reshape(keep.shape + (1,) * (out.ndim - 2))
    return out

  def elements(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every element of the arrays of `rows` (int [B]; -1 rows have none).

    Returns:
      (batch_row int64 [K], elements [K, *item_shape]): element k belongs to
      array rows[batch_row[k]]; arrays in the order of `rows`, elements in
      their order.
    """
    rows = np.asarray(rows)
    real = rows >= 0
    i = np.where(real, rows, 0)
    counts = np.where(real, self.lengths[i], 0).astype(np.int64)
    ends = np.cumsum(counts)
    batch_row = np.repeat(np.arange(len(rows)), counts)
    # Element k of the output, the j-th of its array, is at starts + j.
    index = np.arange(ends[-1] if len(ends) else 0) + (
        self.starts[i] - (ends - counts))[batch_row]
    return batch_row, self.values[index]
