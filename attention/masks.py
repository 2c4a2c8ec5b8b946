"""Attention masks and the masked softmax that every attention layer here shares.

Convention (the same as ``jax.nn.dot_product_attention`` and Flax): a mask is a
boolean array, ``True`` where a query may attend to a key. Masks are built with
the full 4-D layout ``[B, N, T, S]`` in mind and use size-1 axes where they do
not depend on an axis, so they broadcast against each other and against logits.

Shapes use the package's axis legend (see attention/__init__.py).

Policy for a query row that may attend to nothing (every key masked): its
attention weights are all zero and its output is zero, in values and in
gradients, never NaN. (``flax.linen.dot_product_attention`` and
``jax.nn.dot_product_attention`` silently return the uniform average of the
values there instead.) This is what makes padded *query* positions harmless:
mask them out and they contribute exact zeros.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def make_causal_mask(query_length: int,
                     key_length: int | None = None,
                     *,
                     offset: int | Array = 0) -> Array:
  """Causal mask: query ``i`` may attend to key ``j`` iff ``j <= i + offset``.

  Args:
    query_length: T.
    key_length: S (default T).
    offset: absolute position of the first query (an int or a traced scalar),
      e.g. the number of tokens already in a decoding cache. With ``offset=0``
      the mask is aligned at the top left, like ``is_causal=True`` of
      ``jax.nn.dot_product_attention`` and ``torch.nn.functional
      .scaled_dot_product_attention``.

  Returns:
    bool ``[1, 1, T, S]``.
  """
  key_length = query_length if key_length is None else key_length
  for name, value in (('query_length', query_length),
                      ('key_length', key_length)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f'make_causal_mask: {name} must be a positive int, '
                       f'got {value!r}.')
  query_pos_T1 = jnp.arange(query_length)[:, None] + offset
  key_pos_1S = jnp.arange(key_length)[None, :]
  return (key_pos_1S <= query_pos_T1)[None, None]


def make_padding_mask(lengths: Array | None = None,
                      max_length: int | None = None,
                      *,
                      tokens: Array | None = None,
                      pad_id: int = 0,
                      axis: Literal['key', 'query'] = 'key') -> Array:
  """Padding mask from sequence lengths or from token ids.

  Give either ``lengths`` [B] (with ``max_length`` L) or ``tokens`` [B, L]
  (positions equal to ``pad_id`` are padding). Positions ``>= length`` are
  padding.

  Args:
    lengths: int [B], the number of real tokens of each sequence.
    max_length: L, required with ``lengths``.
    tokens: int [B, L] token ids, as an alternative to ``lengths``.
    pad_id: the id that marks padding in ``tokens``.
    axis: 'key' masks keys (``[B, 1, 1, L]``: no query attends to a padded
      key); 'query' masks queries (``[B, 1, L, 1]``: a padded query attends to
      nothing, so its output is zero). Combine the two with
      :func:`combine_masks` for ``[B, 1, T, S]``.

  Returns:
    bool ``[B, 1, 1, L]`` (axis='key') or ``[B, 1, L, 1]`` (axis='query'),
    True at real tokens.
  """
  if (lengths is None) == (tokens is None):
    raise ValueError('make_padding_mask: give exactly one of `lengths` (with '
                     '`max_length`) or `tokens`.')
  if axis not in ('key', 'query'):
    raise ValueError(f"make_padding_mask: axis must be 'key' or 'query', "
                     f'got {axis!r}.')
  if tokens is not None:
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
      raise ValueError('make_padding_mask: tokens must be [B, L], got shape '
                       f'{tokens.shape}.')
    valid_BL = tokens != pad_id
  else:
    lengths = jnp.asarray(lengths)
    if lengths.ndim != 1:
      raise ValueError('make_padding_mask: lengths must be [B], got shape '
                       f'{lengths.shape}.')
    if max_length is None or max_length < 1:
      raise ValueError('make_padding_mask: `lengths` needs a positive '
                       f'`max_length`, got {max_length!r}.')
    valid_BL = jnp.arange(max_length)[None, :] < lengths[:, None]
  if axis == 'key':
    return valid_BL[:, None, None, :]
  return valid_BL[:, None, :, None]


def combine_masks(*masks: Array | None) -> Array | None:
  """Logical AND of masks, skipping ``None``; ``None`` if all are ``None``.

  Masks of lower rank are aligned to the right (NumPy broadcasting) by adding
  leading size-1 axes explicitly, so the result is the same under
  ``jax_numpy_rank_promotion='raise'``.
  """
  masks = [jnp.asarray(m) for m in masks if m is not None]
  if not masks:
    return None
  rank = max(m.ndim for m in masks)
  masks = [_as_bool(m).reshape((1,) * (rank - m.ndim) + m.shape)
           for m in masks]
  try:
    jnp.broadcast_shapes(*(m.shape for m in masks))
  except ValueError:
    raise ValueError('combine_masks: the masks do not broadcast together: '
                     f'shapes {[m.shape for m in masks]}.') from None
  out = masks[0]
  for m in masks[1:]:
    out = jnp.logical_and(out, m)
  return out


def _as_bool(mask: Array) -> Array:
  # Flax's convention for non-bool masks (e.g. the float32 masks of
  # flax.linen.make_attention_mask): nonzero means "may attend".
  return mask if mask.dtype == jnp.bool_ else mask != 0


def masked_softmax(logits: Array, mask: Array | None, axis: int = -1) -> Array:
  """Softmax over ``axis`` in float32, with masked entries exactly zero.

  A slice whose entries are all masked gets all-zero weights, and the gradient
  through it is zero, never NaN (see the module docstring).

  Args:
    logits: any float dtype; computed in float32.
    mask: bool (or Flax-style 0/1) of the same rank as ``logits`` with size-1
      axes allowed, True = keep; or None.
    axis: the axis to normalise over.

  Returns:
    float32 weights of ``logits``' shape.
  """
  logits = logits.astype(jnp.float32)
  if mask is None:
    return jax.nn.softmax(logits, axis=axis)
  mask = _as_bool(mask)
  # A finite fill keeps every intermediate finite: a fully masked slice
  # becomes a uniform softmax that the final `where` turns into zeros, and
  # the zero cotangent of masked entries makes its gradient exactly zero.
  filled = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(filled, axis=axis)
  return jnp.where(mask, weights, 0.0)
