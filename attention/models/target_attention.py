"""Target attention (Deep Interest Network style) on attention.AdditiveAttention.

Each candidate movie attends over the user's history with Bahdanau's score
(Zhou et al., 2018, use a learnt "activation unit" in the same place):

    α_j = softmax_j(vᵀ tanh(W_q e_c + W_k k_j + b)),   k_j = E[s_j] + R[age_j]
    p_c = Σ_j α_j E[s_j]                   (the history pooled for candidate c)
    score(c) = (W p_c + w) · e_c + b_c     ('dot' scorer)
          or   MLP([p_c, e_c, p_c ⊙ e_c]) + b_c   ('mlp' scorer, DIN's)

where e_c = E[c] is the candidate's embedding (the same table E embeds the
history), age_j counts how many movies ago s_j was watched (0 = the latest)
and R is a learnt recency embedding. So a sequel attends to the instalment
before it, a horror film to the horror films in the history, and the pooled
history is scored against the candidate itself.

Every candidate has its own attention, so scoring all M movies costs
B·M·L·A (done in chunks of ``chunk_size`` movies); training therefore uses
sampled candidates (loss 'bce' or 'sampled_softmax'), not a full softmax.

Config fields (``config.model``):
  embed_dim: item (and recency) embedding size D.
  attention_dim: alignment size A of the additive score.
  scorer: 'dot' (bilinear, fast) or 'mlp' (DIN's MLP over [p, e, p⊙e]).
  mlp_dim: hidden width of the 'mlp' scorer.
  recency: add the recency embedding R to the history keys.
  dropout_rate: dropout on the item embeddings.
  chunk_size: candidates scored at once when ranking all movies.

Sizes set by the task from the data: ``num_items`` (M; item 0 is padding),
``max_len`` (rows of R: the longest history), ``num_users`` (not used).

Interface and ``dtype``: see attention.models.mf. ``aux['target_attention']``
holds the float32 candidate -> history weights α: [B, L, C, L] from
``__call__`` and [B, C, L] from ``score_next`` with explicit candidates (none
when ranking all movies, to save memory).

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention.additive import AdditiveAttention

Array = jax.Array
SCORERS = ('dot', 'mlp')


class Model(nn.Module):
  """Candidate -> history additive attention; see the module docstring."""
  num_items: int
  max_len: int
  num_users: int = 0
  embed_dim: int = 64
  attention_dim: int = 64
  scorer: str = 'dot'
  mlp_dim: int = 64
  recency: bool = True
  dropout_rate: float = 0.0
  chunk_size: int = 512
  dtype: Any = jnp.float32

  def setup(self):
    if self.scorer not in SCORERS:
      raise ValueError(f'target_attention: scorer must be one of {SCORERS}, '
                       f'got {self.scorer!r}.')
    if self.num_items < 1 or self.max_len < 1 or self.chunk_size < 1:
      raise ValueError('target_attention: needs num_items, max_len and '
                       f'chunk_size >= 1, got {self.num_items}, '
                       f'{self.max_len} and {self.chunk_size}.')
    init = nn.initializers.normal(self.embed_dim ** -0.5)
    self.item_embed = nn.Embed(self.num_items + 1, self.embed_dim,
                               embedding_init=init, dtype=self.dtype)
    if self.recency:
      self.recency_embed = nn.Embed(self.max_len, self.embed_dim,
                                    embedding_init=init, dtype=self.dtype)
    self.attention = AdditiveAttention(self.attention_dim, dtype=self.dtype)
    if self.scorer == 'dot':
      self.readout = nn.Dense(self.embed_dim, dtype=self.dtype)
    else:
      self.hidden = nn.Dense(self.mlp_dim, dtype=self.dtype)
      self.output = nn.Dense(1, dtype=self.dtype)
    self.item_bias = self.param('item_bias', nn.initializers.zeros_init(),
                                (self.num_items + 1,))
    self.dropout = nn.Dropout(self.dropout_rate)

  def _projected_keys(self, items_BLD, age_xLL):
    """W_k k_j for k_j = E[s_j] + R[age_j]: [B, L, A] (ages [B, L]) or
    [B, L, L, A] (ages [1, L, L]: row t's ages t - j).

    W_k is linear, so W_k E[s_j] and W_k R[age] are projected apart and
    added: the rows of a causal pass share the first and index the second.
    """
    projected_BLA = self.attention.project_keys(items_BLD)
    if not self.recency:
      return projected_BLA[:, None] if age_xLL.ndim == 3 else projected_BLA
    table_1LD = self.recency_embed(jnp.arange(self.max_len))[None]
    recency_LA = self.attention.project_keys(table_1LD)[0]
    recency_xLA = recency_LA[jnp.clip(age_xLL, 0, self.max_len - 1)]
    if age_xLL.ndim == 3:
      return projected_BLA[:, None, :, :] + recency_xLA
    return projected_BLA + recency_xLA

  def _score(self, pooled_xCD, candidate_xCD, candidates_xC):
    """The pooled history against each candidate -> scores [..., C]."""
    if self.scorer == 'dot':
      scores = jnp.sum(self.readout(pooled_xCD) * candidate_xCD, axis=-1)
    else:
      features = jnp.concatenate(
          [pooled_xCD, candidate_xCD, pooled_xCD * candidate_xCD], axis=-1)
      scores = self.output(nn.relu(self.hidden(features)))[..., 0]
    return (scores + self.item_bias[candidates_xC]).astype(jnp.float32)

  def _check_length(self, inputs_BL):
    if inputs_BL.shape[1] > self.max_len:
      raise ValueError(f'target_attention: a history of length '
                       f'{inputs_BL.shape[1]} exceeds max_len={self.max_len} '
                       '(the recency embeddings); raise config.data.max_len.')

  def __call__(self, inputs_BL, user_B, candidates_BLC=None, *,
               deterministic=True):
    """Scores of candidates [B, L, C] for the item after every position t.

    Row t attends over s_0..s_t (ages t - j), the histories of a causal model.
    """
    del user_B  # A user is their history.
    if candidates_BLC is None:
      raise ValueError(
          'target_attention scores every candidate with its own attention, '
          'so a full softmax over all movies at every position is too costly '
          "to train; use config.loss='bce' or 'sampled_softmax'.")
    self._check_length(inputs_BL)
    B, L = inputs_BL.shape
    C = candidates_BLC.shape[-1]
    items_BLD = self.dropout(self.item_embed(inputs_BL),
                             deterministic=deterministic)
    position_L = jnp.arange(L)
    age_LL = position_L[:, None] - position_L[None, :]      # t - j
    projected_BLLA = jnp.broadcast_to(
        self._projected_keys(items_BLD, age_LL[None]),
        (B, L, L, self.attention_dim))
    values_BLLD = jnp.broadcast_to(items_BLD[:, None, :, :],
                                   (B, L, L, items_BLD.shape[-1]))
    mask_BLL = ((age_LL >= 0)[None, :, :]
                & (inputs_BL != 0)[:, None, :])
    candidate_BLCD = self.dropout(self.item_embed(candidates_BLC),
                                  deterministic=deterministic)
    pooled, weights = self.attention(
        candidate_BLCD.reshape(B * L, C, -1),
        values_BLLD.reshape(B * L, L, -1), mask=mask_BLL.reshape(B * L, L),
        projected_keys=projected_BLLA.reshape(B * L, L, -1))
    pooled_BLCD = pooled.reshape(B, L, C, -1)
    scores_BLC = self._score(pooled_BLCD, candidate_BLCD, candidates_BLC)
    return scores_BLC, {'target_attention': weights.reshape(B, L, C, L)}

  def score_next(self, inputs_BL, length_B, user_B, candidates_BC=None):
    """Scores of candidates [B, C] (None = all V ids) after the history."""
    del user_B
    self._check_length(inputs_BL)
    B, L = inputs_BL.shape
    position_1L = jnp.arange(L)[None, :]
    age_BL = length_B[:, None] - 1 - position_1L
    mask_BL = position_1L < length_B[:, None]
    items_BLD = self.item_embed(inputs_BL)
    projected_BLA = self._projected_keys(items_BLD, age_BL)

    def score(model, candidates_BC):
      candidate_BCD = model.item_embed(candidates_BC)
      pooled_BCD, weights_BCL = model.attention(
          candidate_BCD, items_BLD, mask=mask_BL, projected_keys=projected_BLA)
      return model._score(pooled_BCD, candidate_BCD, candidates_BC), (
          weights_BCL)

    if candidates_BC is not None:
      scores_BC, weights_BCL = score(self, candidates_BC)
      return scores_BC, {'target_attention': weights_BCL}
    # All movies, chunk by chunk: [num_chunks, B, C] candidate ids, C the
    # chunk size.
    total = self.num_items + 1
    chunk = min(self.chunk_size, total)
    num_chunks = -(-total // chunk)
    ids = jnp.arange(num_chunks * chunk) % total
    ids_xBC = jnp.broadcast_to(ids.reshape(num_chunks, 1, chunk),
                               (num_chunks, B, chunk))
    scan = nn.scan(
        lambda model, carry, ids_BC: (carry, score(model, ids_BC)[0]),
        variable_broadcast='params', split_rngs={'params': False},
        in_axes=0, out_axes=0)
    _, scores_xBC = scan(self, jnp.zeros(()), ids_xBC)
    scores_BV = jnp.moveaxis(scores_xBC, 0, 1).reshape(B, -1)[:, :total]
    return scores_BV, {}
