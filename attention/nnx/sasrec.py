"""SASRec as a Flax NNX model (attention.nnx.sasrec), on attention.nnx layers.

The same network as attention.models.sasrec (see its docstring): learnt
item and position embeddings, pre-LayerNorm blocks of causal self-attention
and a feed-forward layer, a final LayerNorm, scores against the item
embeddings. Dropout draws from the ``nnx.Rngs`` given at construction.

Weights convert both ways with the linen model's parameter tree::

  model = SASRec(num_items, max_len, num_layers=2, d_model=64, rngs=rngs)
  load_linen_params(model, linen_params)      # linen Model -> NNX
  params = linen_params(model)                # NNX -> linen Model

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp

from attention import nnx as attn
from attention.models import sasrec as linen_sasrec

Array = jax.Array


class Block(nnx.Module):
  """Pre-LN causal self-attention + feed-forward; returns (x, weights)."""

  def __init__(self, d_model: int, num_heads: int, mlp_dim: int,
               dropout_rate: float, attention_dropout_rate: float,
               attention_output_dropout_rate: float | None, dtype: Any,
               rngs: nnx.Rngs):
    self.norm_attention = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.self_attention = attn.MultiHeadAttention(
        num_heads, d_model, dropout_rate=attention_dropout_rate, dtype=dtype,
        rngs=rngs)
    self.norm_mlp = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.wi = nnx.Linear(d_model, mlp_dim, dtype=dtype, rngs=rngs)
    self.wo = nnx.Linear(mlp_dim, d_model, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.output_dropout = self.dropout if (
        attention_output_dropout_rate is None) else nnx.Dropout(
            attention_output_dropout_rate, rngs=rngs)

  def __call__(self, x_BLD, deterministic: bool):
    h_BLD, weights_BNLL = self.self_attention(
        self.norm_attention(x_BLD), is_causal=True,
        deterministic=deterministic, return_weights=True)
    x_BLD = x_BLD + self.output_dropout(h_BLD, deterministic=deterministic)
    h_BLD = self.dropout(nnx.gelu(self.wi(self.norm_mlp(x_BLD))),
                         deterministic=deterministic)
    h_BLD = self.dropout(self.wo(h_BLD), deterministic=deterministic)
    return x_BLD + h_BLD, weights_BNLL


class SASRec(nnx.Module):
  """SASRec; the arguments are attention.models.sasrec.Model's fields."""

  def __init__(self, num_items: int, max_len: int, *, num_layers: int = 2,
               d_model: int = 64, num_heads: int = 1, mlp_dim: int = 64,
               dropout_rate: float = 0.2, attention_dropout_rate: float = 0.0,
               attention_output_dropout_rate: float | None = None,
               positions: str = 'absolute', embed_init: str = 'normal',
               dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if num_items < 1 or max_len < 1:
      raise ValueError('SASRec: needs num_items and max_len >= 1, got '
                       f'{num_items} and {max_len}.')
    if positions not in linen_sasrec.POSITIONS:
      raise ValueError(f'SASRec: unknown positions={positions!r}; valid: '
                       f'{list(linen_sasrec.POSITIONS)}.')
    self.max_len, self.d_model, self.dtype = max_len, d_model, dtype
    self.positions = positions
    if embed_init not in linen_sasrec.EMBED_INITS:
      raise ValueError(f'SASRec: unknown embed_init={embed_init!r}; valid: '
                       f'{list(linen_sasrec.EMBED_INITS)}.')
    init = linen_sasrec.embedding_init(embed_init, d_model)
    self.item_embed = nnx.Embed(num_items + 1, d_model, dtype=dtype,
                                embedding_init=init, rngs=rngs)
    self.position_embed = nnx.Embed(max_len, d_model, dtype=dtype,
                                    embedding_init=init, rngs=rngs)
    self.blocks = nnx.List([
        Block(d_model, num_heads, mlp_dim, dropout_rate,
              attention_dropout_rate, attention_output_dropout_rate, dtype,
              rngs)
        for _ in range(num_layers)])
    self.final_norm = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)

  def encode(self, inputs_BL: Array, *, deterministic: bool = True):
    """History [B, L] -> (states [B, L, D], weights [layers, B, N, L, L])."""
    length = inputs_BL.shape[1]
    if length > self.max_len:
      raise ValueError(f'SASRec: a history of length {length} exceeds '
                       f'max_len={self.max_len} (the learnt positions).')
    x_BLD = (self.item_embed(inputs_BL) * jnp.sqrt(jnp.float32(self.d_model))
             + self.position_embed(linen_sasrec.position_ids(
                 inputs_BL, self.max_len, self.positions)))
    x_BLD = self.dropout(x_BLD.astype(self.dtype),
                         deterministic=deterministic)
    weights = []
    for block in self.blocks:
      x_BLD, w = block(x_BLD, deterministic)
      weights.append(w)
    return self.final_norm(x_BLD), jnp.stack(weights)

  def scores(self, h_BxD: Array, candidates: Array | None = None) -> Array:
    """States [B, ..., D] against candidates [B, ..., C] (None: all items)."""
    if candidates is None:
      return self.item_embed.attend(h_BxD).astype(jnp.float32)
    items = self.item_embed(candidates)
    return jnp.einsum('...D,...CD->...C', h_BxD, items).astype(jnp.float32)

  def __call__(self, inputs_BL: Array, candidates_BLC: Array | None = None,
               *, deterministic: bool = True) -> Array:
    """Scores of the next item at every position: [B, L, V] or [B, L, C]."""
    h_BLD, _ = self.encode(inputs_BL, deterministic=deterministic)
    return self.scores(h_BLD, candidates_BLC)

  def score_next(self, inputs_BL: Array, length_B: Array,
                 candidates_BC: Array | None = None) -> Array:
    """Scores of the item after each history's last one: [B, V] or [B, C]."""
    h_BLD, _ = self.encode(inputs_BL)
    last_B = jnp.maximum(length_B - 1, 0)
    h_BD = jnp.take_along_axis(h_BLD, last_B[:, None, None], axis=1)[:, 0]
    return self.scores(h_BD, candidates_BC)


# The linen model's names of a block's layers -> this model's.
_BLOCK_NAMES = {'LayerNorm_0': 'norm_attention', 'LayerNorm_1': 'norm_mlp',
                'self_attention': 'self_attention'}


def load_linen_params(model: SASRec, params: dict[str, Any]) -> None:
  """Sets ``model``'s parameters from attention.models.sasrec.Model's."""
  tree = {k: v for k, v in params.items() if not k.startswith('blocks_')}
  tree['blocks'] = {}
  for i in range(len(model.blocks)):
    block = params[f'blocks_{i}']
    tree['blocks'][i] = {new: block[old] for old, new in _BLOCK_NAMES.items()}
    tree['blocks'][i].update(block['MlpBlock_0'])  # wi, wo
  attn.load_linen_params(model, tree)


def linen_params(model: SASRec) -> dict[str, Any]:
  """``model``'s parameters as attention.models.sasrec.Model's tree."""
  tree = attn.linen_params(model)
  blocks = tree.pop('blocks')
  for i, block in sorted(blocks.items()):
    out = {old: block[new] for old, new in _BLOCK_NAMES.items()}
    out['MlpBlock_0'] = {'wi': block['wi'], 'wo': block['wo']}
    tree[f'blocks_{i}'] = out
  return tree
