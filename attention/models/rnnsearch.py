"""RNNsearch (Bahdanau, Cho & Bengio, 2014) on attention.AdditiveAttention.

Encoder: a bidirectional GRU; annotation h_j = [→h_j; ←h_j]. Decoder: a GRU
whose state s_i = GRU(s_{i-1}, [E y_{i-1}; c_i]), where the context
c_i = Σ_j α_ij h_j and α_i = softmax_j(vᵀ tanh(W s_{i-1} + U h_j)) — the
attention is conditioned on the *previous* decoder state, as in the paper.
Initial state s_0 = tanh(W_s ←h_1). Deep output (optional): a maxout layer over
[s_i; E y_{i-1}; c_i] before the softmax.

In the paper's decoder the query s_{i-1} has not yet seen the word y_{i-1} just
emitted (it enters s_i, after the attention). ``query='conditional'`` is the
conditional GRU of Nematus (Sennrich et al., 2017): a first GRU reads the word,
s'_i = GRU_1(s_{i-1}, E y_{i-1}), the attention is queried with s'_i, and a
second GRU reads the context, s_i = GRU_2(s'_i, c_i).

Config fields (``config.model``):
  embed_dim: word embedding size (source and target).
  hidden_dim: GRU size (each encoder direction and the decoder).
  attention_dim: alignment size A of the additive score.
  score: 'additive' (Bahdanau) or 'multiplicative' (Luong's general qᵀWk).
  query: 'previous_state' (the paper: s_{i-1}) or 'conditional' (s'_i, which
    has read y_{i-1}; the conditional GRU).
  deep_output: maxout readout (paper) instead of a linear one.
  readout_dim: maxout output size (each unit the max of two).
  dropout_rate: dropout on embeddings and the readout.

``dtype`` (set by the task from ``config.dtype``) is the compute dtype of the
embeddings, the annotations and every matmul (GRUs, attention, readout);
parameters, the GRU states, α and the returned logits are float32.

Shapes use the package's axis legend (see attention/__init__.py): D is the
GRU state (the annotations have 2·D), E the word embedding.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention.additive import AdditiveAttention
from attention.additive import MultiplicativeAttention

Array = jax.Array
SCORES = ('additive', 'multiplicative')
QUERIES = ('previous_state', 'conditional')


class Model(nn.Module):
  """RNNsearch; ``__call__(src_BS, tgt_in_BT) -> (logits_BTV, aux)``.

  ``aux['alignment']`` is α, float32 [B, T, S]. Decoding: ``init_decode`` then
  ``decode_step`` (see attention.tasks.decoding).
  """
  src_vocab_size: int
  tgt_vocab_size: int
  embed_dim: int = 64
  hidden_dim: int = 128
  attention_dim: int = 128
  score: str = 'additive'
  query: str = 'previous_state'
  deep_output: bool = True
  readout_dim: int = 128
  dropout_rate: float = 0.0
  pad_id: int = 0
  dtype: Any = jnp.float32
  # RNNencdec (attention.models.rnnencdec) sets this False: the decoder then
  # sees one fixed summary of the source instead of an attended context.
  use_attention: bool = True

  def setup(self):
    if self.score not in SCORES:
      raise ValueError(f'rnnsearch: score must be one of {SCORES}, got '
                       f'{self.score!r}.')
    if self.query not in QUERIES:
      raise ValueError(f'rnnsearch: query must be one of {QUERIES}, got '
                       f'{self.query!r}.')
    self.src_embed = nn.Embed(self.src_vocab_size, self.embed_dim,
                              dtype=self.dtype)
    self.tgt_embed = nn.Embed(self.tgt_vocab_size, self.embed_dim,
                              dtype=self.dtype)
    self.encoder = nn.Bidirectional(
        nn.RNN(nn.GRUCell(self.hidden_dim, dtype=self.dtype)),
        nn.RNN(nn.GRUCell(self.hidden_dim, dtype=self.dtype)),
        return_carry=True)
    self.init_state = nn.Dense(self.hidden_dim, dtype=self.dtype)
    if self.use_attention:
      if self.score == 'additive':
        self.attention = AdditiveAttention(self.attention_dim, dtype=self.dtype)
      else:
        self.attention = MultiplicativeAttention(dtype=self.dtype)
    else:
      self.summary = nn.Dense(2 * self.hidden_dim, dtype=self.dtype)
    if self.query == 'conditional':
      self.query_cell = nn.GRUCell(self.hidden_dim, dtype=self.dtype)
    self.decoder_cell = nn.GRUCell(self.hidden_dim, dtype=self.dtype)
    if self.deep_output:
      self.readout = nn.Dense(2 * self.readout_dim, dtype=self.dtype)
    self.logits_dense = nn.Dense(self.tgt_vocab_size, dtype=self.dtype)
    self.dropout = nn.Dropout(self.dropout_rate)

  def encode(self, src_BS, *, deterministic=True):
    """Source -> decoder memory: annotations, projected keys, mask, s_0."""
    src_mask_BS = src_BS != self.pad_id
    lengths_B = src_mask_BS.sum(-1)
    x = self.dropout(self.src_embed(src_BS), deterministic=deterministic)
    (forward_last, backward_first), annotations_BSD = self.encoder(
        x, seq_lengths=lengths_B)
    annotations_BSD = annotations_BSD.astype(self.dtype)
    memory = {'annotations': annotations_BSD, 'src_mask': src_mask_BS}
    if self.use_attention:
      memory['projected_keys'] = self.attention.project_keys(annotations_BSD)
    else:
      memory['summary'] = jnp.tanh(self.summary(
          jnp.concatenate([forward_last, backward_first], -1)))
    # The decoder's GRU state is float32 like the encoder's (flax's GRUCell
    # starts its carry in the parameter dtype): in bfloat16, an update gate
    # near 1 would round the state's small updates away.
    s0_BD = jnp.tanh(self.init_state(backward_first)).astype(jnp.float32)
    return memory, s0_BD

  def _step(self, memory, s_prev_BD, y_prev_BE, deterministic):
    """One decoder step -> (s_i, (logits_BV, alpha_BS or None))."""
    conditional = self.query == 'conditional'
    query_BD = (self.query_cell(s_prev_BD, y_prev_BE)[0] if conditional
                else s_prev_BD)
    if self.use_attention:
      context, alpha_BS = self.attention(
          query_BD, memory['annotations'], mask=memory['src_mask'],
          projected_keys=memory['projected_keys'])
    else:
      context, alpha_BS = memory['summary'], None
    if conditional:
      s_BD, _ = self.decoder_cell(query_BD, context)
    else:
      s_BD, _ = self.decoder_cell(s_prev_BD,
                                  jnp.concatenate([y_prev_BE, context], -1))
    if self.deep_output:
      t = self.readout(jnp.concatenate([s_BD, y_prev_BE, context], -1))
      t = t.reshape(t.shape[:-1] + (self.readout_dim, 2)).max(-1)  # maxout
    else:
      t = jnp.concatenate([s_BD, context], -1)
    t = self.dropout(t, deterministic=deterministic)
    logits_BV = self.logits_dense(t).astype(jnp.float32)
    return s_BD, (logits_BV, alpha_BS)

  def __call__(self, src_BS, tgt_in_BT, *, deterministic=True):
    memory, s0 = self.encode(src_BS, deterministic=deterministic)
    y_BTE = self.dropout(self.tgt_embed(tgt_in_BT), deterministic=deterministic)
    scan = nn.scan(
        lambda model, s, y: model._step(memory, s, y, deterministic),
        variable_broadcast='params', split_rngs={'params': False,
                                                 'dropout': True},
        in_axes=1, out_axes=1)
    _, (logits_BTV, alpha_BTS) = scan(self, s0, y_BTE)
    aux = {} if alpha_BTS is None else {'alignment': alpha_BTS}
    return logits_BTV, aux

  def init_decode(self, src_BS, max_length: int):
    del max_length  # The recurrent state does not grow.
    memory, s0 = self.encode(src_BS)
    return {'memory': memory, 's': s0}

  def decode_step(self, state, token_B):
    """One target token per sequence -> (logits [B, V], next state)."""
    s, (logits_BV, _) = self._step(state['memory'], state['s'],
                                   self.tgt_embed(token_B), True)
    return logits_BV, {**state, 's': s}
