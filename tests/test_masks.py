"""Masks against NumPy constructions written here."""

import numpy as np
import pytest

from attention import combine_masks
from attention import make_causal_mask
from attention import make_padding_mask


def test_causal_mask_is_lower_triangular():
  np.testing.assert_array_equal(
      make_causal_mask(4), np.tril(np.ones((4, 4), bool))[None, None])


def test_causal_mask_with_offset_and_longer_keys():
  # Two queries at absolute positions 3 and 4 over a cache of 6 keys.
  got = np.asarray(make_causal_mask(2, 6, offset=3))[0, 0]
  want = np.array([[1, 1, 1, 1, 0, 0],
                   [1, 1, 1, 1, 1, 0]], bool)
  np.testing.assert_array_equal(got, want)


def test_padding_mask_from_lengths_and_tokens_agree():
  tokens = np.array([[5, 6, 7, 0], [8, 0, 0, 0]])
  from_tokens = make_padding_mask(tokens=tokens, pad_id=0)
  from_lengths = make_padding_mask(np.array([3, 1]), 4)
  want = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
  assert from_tokens.shape == (2, 1, 1, 4)
  np.testing.assert_array_equal(from_tokens[:, 0, 0], want)
  np.testing.assert_array_equal(from_lengths, from_tokens)
  query = make_padding_mask(np.array([3, 1]), 4, axis='query')
  assert query.shape == (2, 1, 4, 1)
  np.testing.assert_array_equal(query[:, 0, :, 0], want)


def test_combine_masks():
  assert combine_masks(None, None) is None
  key = make_padding_mask(np.array([2, 3]), 3)
  query = make_padding_mask(np.array([1, 3]), 3, axis='query')
  got = np.asarray(combine_masks(key, None, query, make_causal_mask(3)[0]))
  assert got.shape == (2, 1, 3, 3)
  want0 = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0]], bool)
  np.testing.assert_array_equal(got[0, 0], want0)
  np.testing.assert_array_equal(got[1, 0], np.tril(np.ones((3, 3), bool)))
  # Flax-style float masks: nonzero = may attend.
  np.testing.assert_array_equal(
      combine_masks(np.array([[1.0, 0.0]]), np.array([[True, True]])),
      np.array([[True, False]]))


@pytest.mark.parametrize('call, message', [
    (lambda: make_causal_mask(0), 'positive int'),
    (lambda: make_padding_mask(), 'exactly one'),
    (lambda: make_padding_mask(np.array([1, 2])), 'max_length'),
    (lambda: make_padding_mask(tokens=np.zeros((2, 3, 4))), r'\[B, L\]'),
    (lambda: make_padding_mask(np.array([1]), 3, axis='value'), "'key' or"),
    (lambda: combine_masks(np.ones((2, 3), bool), np.ones((4, 3), bool)),
     'do not broadcast'),
])
def test_bad_input(call, message):
  with pytest.raises(ValueError, match=message):
    call()
