"""Rotary position embeddings (RoPE; Su et al., 2021).

Each query and key head vector is split into H/2 pairs (x_i, x_{i+H/2}) and
pair i is rotated by the angle p·θ_i, θ_i = base^(-2i/H), where p is the
token's position. A rotated query at position p and a rotated key at position
q then have the dot product of the unrotated vectors with a rotation by
(p - q)·θ between them: attention scores depend on relative, not absolute,
positions, and no position vector is added to the embeddings.

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def rotary_embedding(x_BLNH: Array, positions_BL: Array,
                     base: float = 10_000.0) -> Array:
  """Rotates each head vector of ``x`` by its position.

  Args:
    x_BLNH: queries or keys [B, L, N, H]; H must be even.
    positions_BL: integer positions, broadcastable to [B, L].
    base: the wavelength base of θ_i (10,000 as in the paper).

  Returns:
    An array of ``x``'s shape and dtype; the rotation is computed in float32.
  """
  head_dim = x_BLNH.shape[-1]
  if head_dim % 2:
    raise ValueError(f'rotary_embedding: the head dim must be even to form '
                     f'pairs, got H={head_dim} (shape {x_BLNH.shape}).')
  half = head_dim // 2
  inv_freq_111H2 = jnp.asarray(
      base ** (-np.arange(half) / half), jnp.float32).reshape(1, 1, 1, half)
  positions_BL = jnp.broadcast_to(jnp.asarray(positions_BL),
                                  x_BLNH.shape[:2]).astype(jnp.float32)
  angles_BL1H2 = positions_BL[:, :, None, None] * inv_freq_111H2
  cos, sin = jnp.cos(angles_BL1H2), jnp.sin(angles_BL1H2)
  x = x_BLNH.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
  return rotated.astype(x_BLNH.dtype)
