"""Matrix factorisation: the dot-product baseline for movie recommendation.

A user embedding per user id and an item embedding (plus an item bias) per
movie; score(u, i) = u · e_i + b_i. The history is not read: a user is its
embedding, learnt from that user's training interactions, and the same
embedding ranks that user's validation and test targets (the same users,
later items, never seen in training).

Config fields (``config.model``):
  d_model: embedding size D.
  use_bias: a learnt per-item bias (popularity).

Sizes set by the task from the data: ``num_items`` (M; item 0 is padding),
``num_users`` (U; user 0 is padding), ``max_len`` (not used here).

The interface of every movie model (attention.tasks.movies):
  ``__call__(inputs_BL, user_B, candidates_BLC=None, *, deterministic)``
      -> (scores [B, L, C], aux): the next item after every position;
      candidates None = all items, [B, L, V] (column 0 is padding), or
      [B, 1, V] from a model whose scores ignore the position (this one).
      The models whose states do not depend on the candidate (sasrec, mf)
      also take candidates [B, 1, C] (one set for every position), and a
      tuple of candidate arrays, scored against the same states (a tuple
      of scores).
  ``score_next(inputs_BL, length_B, user_B, candidates_BC=None)``
      -> (scores [B, C] or [B, V], aux): the item after the whole history.
  ``dtype``: the compute dtype of the embeddings and matmuls, set by the task
      from ``config.dtype``; parameters are float32 whatever it is, and
      scores and attention weights are float32.

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class Model(nn.Module):
  """User · item dot product; ``aux`` is empty (no attention)."""
  num_items: int
  num_users: int
  max_len: int = 0
  d_model: int = 64
  use_bias: bool = True
  dtype: Any = jnp.float32

  def setup(self):
    if self.num_users < 1 or self.num_items < 1:
      raise ValueError('mf: needs num_users and num_items >= 1, got '
                       f'{self.num_users} and {self.num_items}.')
    init = nn.initializers.normal(self.d_model ** -0.5)
    self.user_embed = nn.Embed(self.num_users + 1, self.d_model,
                               embedding_init=init, dtype=self.dtype)
    self.item_embed = nn.Embed(self.num_items + 1, self.d_model,
                               embedding_init=init, dtype=self.dtype)
    if self.use_bias:
      self.item_bias = self.param('item_bias', nn.initializers.zeros_init(),
                                  (self.num_items + 1,))

  def _scores(self, user_BD, candidates):
    """user [B, D] against candidates [B, ...] (None = all) -> [B, ...]."""
    if candidates is None:
      scores = self.item_embed.attend(user_BD)
      bias = self.item_bias if self.use_bias else None
      if bias is not None:
        scores = scores + bias[None, :]
      return scores.astype(jnp.float32)
    items = self.item_embed(candidates)
    user = user_BD.reshape(user_BD.shape[:1] + (1,) * (candidates.ndim - 1)
                           + user_BD.shape[1:])
    scores = jnp.sum(user * items, axis=-1)
    if self.use_bias:
      scores = scores + self.item_bias[candidates]
    return scores.astype(jnp.float32)

  def __call__(self, inputs_BL, user_B, candidates_BLC=None, *,
               deterministic=True):
    del deterministic  # No dropout.
    user_BD = self.user_embed(user_B)
    if candidates_BLC is None:  # The same at every position: [B, 1, V].
      return self._scores(user_BD, None)[:, None, :], {}
    if isinstance(candidates_BLC, tuple):
      return tuple(self._scores(user_BD, c) for c in candidates_BLC), {}
    return self._scores(user_BD, candidates_BLC), {}

  def score_next(self, inputs_BL, length_B, user_B, candidates_BC=None):
    del inputs_BL, length_B  # A user is its embedding.
    return self._scores(self.user_embed(user_B), candidates_BC), {}
