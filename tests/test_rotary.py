"""Rotary position embeddings against a NumPy reference written pair by pair."""

import jax
import numpy as np
import pytest

from attention import rotary


def numpy_rope(x_BLNH, positions_L, base):
  """Rotary embedding written out pair by pair: (x_i, x_{i+H/2}) rotated."""
  x = np.asarray(x_BLNH, np.float64)
  half = x.shape[-1] // 2
  out = np.empty_like(x)
  for i in range(half):
    theta = positions_L[:, None] * base ** (-i / half)  # [L, 1]
    c, s = np.cos(theta), np.sin(theta)
    out[..., i] = x[..., i] * c - x[..., i + half] * s
    out[..., i + half] = x[..., i + half] * c + x[..., i] * s
  return out


def test_rotary_embedding_matches_numpy():
  x = np.asarray(jax.random.normal(jax.random.key(20), (2, 6, 2, 8)))
  positions = np.arange(6) * 3 + 1
  np.testing.assert_allclose(rotary.rotary_embedding(x, positions, 100.0),
                             numpy_rope(x, positions, 100.0), rtol=1e-5,
                             atol=1e-5)


def test_odd_head_dim_is_a_clear_error():
  with pytest.raises(ValueError, match='head dim must be even'):
    rotary.rotary_embedding(np.zeros((1, 3, 2, 5), np.float32), np.arange(3))
