"""Ragged arrays (the batch sources' flat storage) against plain Python loops."""

import numpy as np
import pytest

from attention.data import ragged


def _arrays(seed=0, n=30):
  rng = np.random.default_rng(seed)
  return [rng.integers(1, 100, size=rng.integers(0, 9)).astype(np.int32)
          for _ in range(n)]


def test_padded_matches_a_loop():
  arrays = _arrays()
  seqs = ragged.Ragged(arrays, np.int32)
  rows = np.array([3, -1, 0, 7, 7, -1, 29])
  rng = np.random.default_rng(1)
  lengths = np.array([len(arrays[r]) if r >= 0 else 0 for r in rows])
  start = rng.integers(0, lengths + 1)
  count = rng.integers(0, lengths - start + 1)
  out = seqs.padded(rows, 10, start=start, count=count)
  whole = seqs.padded(rows, 10)
  assert out.dtype == np.int32 and out.shape == (7, 10)
  for r, i in enumerate(rows):
    expect = np.zeros(10, np.int32)
    expect_whole = np.zeros(10, np.int32)
    if i >= 0:
      piece = arrays[i][start[r]:start[r] + count[r]]
      expect[:len(piece)] = piece
      expect_whole[:len(arrays[i])] = arrays[i]
    np.testing.assert_array_equal(out[r], expect)
    np.testing.assert_array_equal(whole[r], expect_whole)


def test_elements_match_a_loop():
  rng = np.random.default_rng(2)
  arrays = [rng.integers(0, 9, size=(rng.integers(0, 5), 2)) for _ in range(12)]
  links = ragged.Ragged(arrays, np.int64, item_shape=(2,))
  rows = np.array([5, -1, 0, 11, 5])
  batch_row, elements = links.elements(rows)
  expect_rows = [r for r, i in enumerate(rows) if i >= 0
                 for _ in range(len(arrays[i]))]
  expect = [e for i in rows if i >= 0 for e in arrays[i]]
  np.testing.assert_array_equal(batch_row, expect_rows)
  np.testing.assert_array_equal(elements.reshape(-1, 2),
                                np.reshape(expect, (-1, 2)))


def test_empty_and_padding_only():
  seqs = ragged.Ragged([np.zeros(0, np.int32), np.array([4, 5], np.int32)])
  np.testing.assert_array_equal(seqs.padded(np.array([0, -1, 1]), 3),
                                [[0, 0, 0], [0, 0, 0], [4, 5, 0]])
  assert seqs.padded(np.array([-1, -1]), 0).shape == (2, 0)
  assert seqs.padded(np.zeros(0, np.int64), 4).shape == (0, 4)
  row, values = seqs.elements(np.zeros(0, np.int64))
  assert row.shape == (0,) and values.shape == (0,)
  assert len(ragged.Ragged([], np.int32)) == 0


def test_too_short_a_padded_length_is_an_error():
  seqs = ragged.Ragged([np.arange(5)])
  with pytest.raises(ValueError, match='needs 5 positions, more than the '
                     'padded length 4'):
    seqs.padded(np.array([0]), 4)
