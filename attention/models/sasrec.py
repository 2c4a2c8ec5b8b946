"""SASRec (Kang & McAuley, 2018): self-attentive sequential recommendation.

Causal self-attention (attention.MultiHeadAttention, ``is_causal=True``) over
the user's history of movies: position t sees the movies up to t and predicts
the movie after it. Input x_t = √D · E[s_t] + P[t] (learnt positions),
pre-LayerNorm blocks of self-attention and a feed-forward layer, a final
LayerNorm, and scores against the SAME item embeddings E (shared between
input and output): score(t, i) = h_t · E[i].

Histories are right-padded, so the causal mask alone keeps every real
position from seeing padding; padded positions are masked out of the loss.

Which row of P an item gets (``positions``): 'absolute' counts from the
oldest item of the window (P[0] is the oldest), 'recent' from the most recent
one (the last real item gets P[max_len - 1], the one before it P[max_len - 2],
...): the positions of SASRec's left-padded inputs, so that a history's
newest item always has the same position, however long the history is.

Config fields (``config.model``):
  num_layers: self-attention blocks.
  d_model: embedding and model width D.
  num_heads: attention heads N.
  mlp_dim: hidden width of the feed-forward layers.
  dropout_rate: dropout on the input embeddings and the residual branches.
  attention_dropout_rate: dropout on the attention weights.
  attention_output_dropout_rate: dropout on the attention output before the
    residual sum (None: dropout_rate, the paper's §III-C; 0: none, as the
    reference implementations).
  positions: 'absolute' | 'recent' (see above).
  embed_init: 'normal' | 'xavier': item and position embeddings'
    initialisation (see embedding_init).

Sizes set by the task from the data: ``num_items`` (M; item 0 is padding),
``max_len`` (rows of P: the longest history), ``num_users`` (not used).

Interface and ``dtype``: see attention.models.mf. ``aux['self_attention']``
holds float32 [num_layers, B, N, L, L]: every block and head (query t, key
s <= t).

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention.models.transformer import MlpBlock
from attention.multihead import MultiHeadAttention

Array = jax.Array
POSITIONS = ('absolute', 'recent')
EMBED_INITS = ('normal', 'xavier')


def embedding_init(name: str, d_model: int):
  """'normal': N(0, 1/D). 'xavier': Xavier normal over the table's
  [rows, D] shape, std sqrt(2 / (rows + D)) (the SASRec reference's): far
  smaller for a large catalogue."""
  if name == 'normal':
    return nn.initializers.normal(d_model ** -0.5)
  return nn.initializers.xavier_normal()


def position_ids(inputs_BL, max_len: int, positions: str):
  """int32 [B, L]: the row of P each input gets (padding: any valid row).

  'absolute': t. 'recent': max_len - n + t for a history of n real items
  (items are ids >= 1, padding 0 follows them), so the newest is max_len - 1.
  """
  B, L = inputs_BL.shape
  t_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
  if positions == 'absolute':
    return t_BL
  n_B1 = jnp.sum(inputs_BL != 0, axis=1, dtype=jnp.int32)[:, None]
  return jnp.clip(t_BL + max_len - n_B1, 0, max_len - 1)


class Block(nn.Module):
  """Pre-LN causal self-attention + feed-forward; returns (x, weights)."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float
  attention_dropout_rate: float
  attention_output_dropout_rate: float | None
  dtype: Any

  @nn.compact
  def __call__(self, x_BLD, deterministic):
    drop = functools.partial(nn.Dropout(self.dropout_rate),
                             deterministic=deterministic)
    h_BLD, weights_BNLL = MultiHeadAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        dtype=self.dtype, name='self_attention')(
            nn.LayerNorm(dtype=self.dtype)(x_BLD), is_causal=True,
            deterministic=deterministic, return_weights=True)
    if self.attention_output_dropout_rate is None:
      x_BLD = x_BLD + drop(h_BLD)
    else:
      x_BLD = x_BLD + nn.Dropout(self.attention_output_dropout_rate)(
          h_BLD, deterministic=deterministic)
    h_BLD = MlpBlock(self.mlp_dim, self.dropout_rate, self.dtype)(
        nn.LayerNorm(dtype=self.dtype)(x_BLD), deterministic)
    return x_BLD + drop(h_BLD), weights_BNLL


class Model(nn.Module):
  """SASRec; see the module docstring."""
  num_items: int
  max_len: int
  num_users: int = 0
  num_layers: int = 2
  d_model: int = 64
  num_heads: int = 1
  mlp_dim: int = 64
  dropout_rate: float = 0.2
  attention_dropout_rate: float = 0.0
  attention_output_dropout_rate: float | None = None
  positions: str = 'absolute'
  embed_init: str = 'normal'
  dtype: Any = jnp.float32

  def setup(self):
    if self.num_items < 1 or self.max_len < 1:
      raise ValueError('sasrec: needs num_items and max_len >= 1, got '
                       f'{self.num_items} and {self.max_len}.')
    if self.positions not in POSITIONS:
      raise ValueError(f'sasrec: unknown positions={self.positions!r}; valid: '
                       f'{list(POSITIONS)}.')
    if self.embed_init not in EMBED_INITS:
      raise ValueError(f'sasrec: unknown embed_init={self.embed_init!r}; '
                       f'valid: {list(EMBED_INITS)}.')
    embed = functools.partial(
        nn.Embed, features=self.d_model, dtype=self.dtype,
        embedding_init=embedding_init(self.embed_init, self.d_model))
    self.item_embed = embed(self.num_items + 1)
    self.position_embed = embed(self.max_len)
    self.blocks = [Block(self.num_heads, self.mlp_dim, self.dropout_rate,
                         self.attention_dropout_rate,
                         self.attention_output_dropout_rate, self.dtype)
                   for _ in range(self.num_layers)]
    self.final_norm = nn.LayerNorm(dtype=self.dtype)
    self.dropout = nn.Dropout(self.dropout_rate)

  def encode(self, inputs_BL, *, deterministic=True):
    """History [B, L] -> (states h [B, L, D], weights [layers, B, N, L, L])."""
    length = inputs_BL.shape[1]
    if length > self.max_len:
      raise ValueError(f'sasrec: a history of length {length} exceeds '
                       f'max_len={self.max_len} (the learnt positions); '
                       'raise config.data.max_len.')
    x_BLD = (self.item_embed(inputs_BL) * jnp.sqrt(jnp.float32(self.d_model))
             + self.position_embed(position_ids(inputs_BL, self.max_len,
                                                self.positions)))
    x_BLD = self.dropout(x_BLD.astype(self.dtype), deterministic=deterministic)
    weights = []
    for block in self.blocks:
      x_BLD, w = block(x_BLD, deterministic)
      weights.append(w)
    return self.final_norm(x_BLD), jnp.stack(weights)

  def _scores(self, h_BxD, candidates):
    """States [B, ..., D] against candidates [B, ..., C] (None = all items)."""
    if candidates is None:
      return self.item_embed.attend(h_BxD).astype(jnp.float32)
    items = self.item_embed(candidates)
    return jnp.einsum('...D,...CD->...C', h_BxD, items).astype(jnp.float32)

  def __call__(self, inputs_BL, user_B, candidates_BLC=None, *,
               deterministic=True):
    del user_B  # A user is their history.
    h_BLD, weights = self.encode(inputs_BL, deterministic=deterministic)
    if isinstance(candidates_BLC, tuple):  # scored against the same states
      scores = tuple(self._scores(h_BLD, c) for c in candidates_BLC)
    else:
      scores = self._scores(h_BLD, candidates_BLC)
    return scores, {'self_attention': weights}

  def score_next(self, inputs_BL, length_B, user_B, candidates_BC=None):
    del user_B
    h_BLD, weights = self.encode(inputs_BL)
    last_B = jnp.maximum(length_B - 1, 0)
    h_BD = jnp.take_along_axis(h_BLD, last_B[:, None, None], axis=1)[:, 0]
    return self._scores(h_BD, candidates_BC), {'self_attention': weights}
