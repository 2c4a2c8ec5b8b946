"""RNNsearch's decoder step as a Flax NNX model (attention.nnx.rnnsearch).

The decoder of attention.models.rnnsearch (see its docstring) on
attention.nnx.AdditiveAttention: at each step the query (s_{i-1}, or with
``query='conditional'`` a first GRU's s'_i that has read y_{i-1}) scores the
source annotations, the context enters the decoder GRU, and a maxout (or
linear) readout gives the logits. What the steps share lives in the module
as ``nnx.Cache`` state, set by :meth:`Decoder.init_cache`: the annotations,
their keys projected once, the source mask and the decoder state s.

  decoder.init_cache(annotations_BSD, src_mask_BS, s0_BD)
  logits_BV, alpha_BS = decoder(token_B)     # one step; s moves on

The parameter names are the linen model's (tgt_embed, attention, query_cell,
decoder_cell, readout, logits_dense), so ``load_linen_params(decoder,
params)`` takes those entries of a trained attention.models.rnnsearch.Model
(:func:`linen_decoder_params` picks them).

Shapes use the package's axis legend (see attention/__init__.py): D is the
GRU state (the annotations have 2·D), E the word embedding.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp

from attention import nnx as attn

Array = jax.Array
QUERIES = ('previous_state', 'conditional')
DECODER_PARAMS = ('tgt_embed', 'attention', 'query_cell', 'decoder_cell',
                  'readout', 'logits_dense')


class GRUCell(nnx.Module):
  """flax.linen.GRUCell's parameters and math: gates ir, iz, in, hr, hz, hn.

  (flax.nnx.GRUCell fuses the gates and has no bias on the hidden state's
  candidate, so linen GRU weights do not load into it.)
  """

  def __init__(self, in_features: int, hidden_features: int, *,
               dtype: Any = None, rngs: nnx.Rngs):
    def dense(features_in, use_bias, init):
      return nnx.Linear(features_in, hidden_features, use_bias=use_bias,
                        dtype=dtype, kernel_init=init, rngs=rngs)

    lecun, orthogonal = (nnx.initializers.lecun_normal(),
                         nnx.initializers.orthogonal())
    self.ir = dense(in_features, True, lecun)
    self.iz = dense(in_features, True, lecun)
    setattr(self, 'in', dense(in_features, True, lecun))  # linen's name
    self.hr = dense(hidden_features, False, orthogonal)
    self.hz = dense(hidden_features, False, orthogonal)
    self.hn = dense(hidden_features, True, orthogonal)

  def __call__(self, h_BD: Array, x_BE: Array) -> Array:
    """The next state."""
    r = jax.nn.sigmoid(self.ir(x_BE) + self.hr(h_BD))
    z = jax.nn.sigmoid(self.iz(x_BE) + self.hz(h_BD))
    n = jnp.tanh(getattr(self, 'in')(x_BE) + r * self.hn(h_BD))
    return (1.0 - z) * n + z * h_BD


class Decoder(nnx.Module):
  """One RNNsearch decoder step per call, over a cached source.

  Args:
    tgt_vocab_size: V.
    embed_dim: E.
    hidden_dim: D (the annotations are 2·D wide).
    attention_dim: A, the additive score's alignment size.
    query: 'previous_state' (the paper) or 'conditional'.
    deep_output: a maxout readout (else linear).
    readout_dim: maxout units.
    dtype: computation dtype.
    rngs: parameter initialisation.
  """

  def __init__(self, tgt_vocab_size: int, *, embed_dim: int = 64,
               hidden_dim: int = 128, attention_dim: int = 128,
               query: str = 'previous_state', deep_output: bool = True,
               readout_dim: int = 128, dtype: Any = None, rngs: nnx.Rngs):
    if query not in QUERIES:
      raise ValueError(f'Decoder: query must be one of {QUERIES}, got '
                       f'{query!r}.')
    self.conditional = query == 'conditional'
    self.deep_output, self.readout_dim = deep_output, readout_dim
    self.hidden_dim = hidden_dim
    E, D = embed_dim, hidden_dim
    self.tgt_embed = nnx.Embed(tgt_vocab_size, E, dtype=dtype, rngs=rngs)
    self.attention = attn.AdditiveAttention(D, 2 * D, attention_dim,
                                            dtype=dtype, rngs=rngs)
    if self.conditional:
      self.query_cell = GRUCell(E, D, dtype=dtype, rngs=rngs)
      self.decoder_cell = GRUCell(2 * D, D, dtype=dtype, rngs=rngs)
    else:
      self.query_cell = nnx.data(None)
      self.decoder_cell = GRUCell(E + 2 * D, D, dtype=dtype, rngs=rngs)
    if deep_output:
      self.readout = nnx.Linear(D + E + 2 * D, 2 * readout_dim, dtype=dtype,
                                rngs=rngs)
      out_in = readout_dim
    else:
      self.readout = nnx.data(None)
      out_in = D + 2 * D
    self.logits_dense = nnx.Linear(out_in, tgt_vocab_size, dtype=dtype,
                                   rngs=rngs)
    self.annotations = self.projected_keys = nnx.data(None)
    self.src_mask = self.state = nnx.data(None)

  def init_cache(self, annotations_BSD: Array, src_mask_BS: Array,
                 s0_BD: Array) -> None:
    """Caches a source (annotations [B, S, 2D], mask [B, S]) and s_0."""
    if annotations_BSD.shape[-1] != 2 * self.hidden_dim:
      raise ValueError(f'Decoder: annotations must be [B, S, 2D] = '
                       f'[B, S, {2 * self.hidden_dim}], got '
                       f'{annotations_BSD.shape}.')
    self.annotations = nnx.Cache(annotations_BSD)
    self.projected_keys = nnx.Cache(
        self.attention.project_keys(annotations_BSD))
    self.src_mask = nnx.Cache(src_mask_BS)
    self.state = nnx.Cache(s0_BD.astype(jnp.float32))

  def __call__(self, token_B: Array):
    """One target token per sequence -> (logits [B, V], alpha [B, S])."""
    if self.state is None:
      raise ValueError('Decoder: no source cached; call init_cache('
                       'annotations, src_mask, s0) first.')
    y_BE = self.tgt_embed(token_B)
    s_prev_BD = self.state[...]
    query_BD = (self.query_cell(s_prev_BD, y_BE) if self.conditional
                else s_prev_BD)
    context, alpha_BS = self.attention(
        query_BD, self.annotations[...], mask=self.src_mask[...],
        projected_keys=self.projected_keys[...])
    if self.conditional:
      s_BD = self.decoder_cell(query_BD, context)
    else:
      s_BD = self.decoder_cell(s_prev_BD,
                               jnp.concatenate([y_BE, context], -1))
    self.state[...] = s_BD.astype(jnp.float32)
    if self.deep_output:
      t = self.readout(jnp.concatenate([s_BD, y_BE, context], -1))
      t = t.reshape(t.shape[:-1] + (self.readout_dim, 2)).max(-1)  # maxout
    else:
      t = jnp.concatenate([s_BD, context], -1)
    return self.logits_dense(t).astype(jnp.float32), alpha_BS


def linen_decoder_params(params: dict[str, Any]) -> dict[str, Any]:
  """The decoder's entries of an attention.models.rnnsearch.Model tree."""
  return {k: v for k, v in params.items() if k in DECODER_PARAMS}
