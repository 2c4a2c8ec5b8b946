"""Transformer encoder-decoder for translation, built on attention.MultiHeadAttention.

Pre-LayerNorm (Xiong et al., 2020), sinusoidal, learned or rotary positions,
optionally tied target embeddings, grouped-query heads and QK-norm from the
layer.

Config fields (``config.model``):
  num_layers: encoder and decoder layers.
  d_model: model width D.
  num_heads: attention heads N.
  num_kv_heads: key/value heads K (grouped-query); None = N.
  mlp_dim: hidden width of the feed-forward blocks.
  dropout_rate: dropout on embeddings and residual branches.
  attention_dropout_rate: dropout on attention weights.
  tie_embeddings: output projection = target embedding matrix (scaled inputs).
  position: 'sinusoidal' (any length), 'learned' (up to max_length) or
    'rope' (rotary embeddings in every self-attention layer, nothing added to
    the embeddings; cross-attention then matches by content alone).
  max_length: longest sequence for learned positions.
  normalize_qk: QK-LayerNorm in every attention layer.
  implementation: attention implementation (see attention.dot_product_attention).

``dtype`` (set by the task from ``config.dtype``) is the compute dtype of the
embeddings, activations and matmuls; parameters are float32 whatever it is,
and attention softmax and the returned logits are float32.

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attention import masks as masks_lib
from attention.multihead import MultiHeadAttention

Array = jax.Array
POSITIONS = ('sinusoidal', 'learned', 'rope')


def sinusoidal_positions(positions: Array, features: int) -> Array:
  """Vaswani et al.'s fixed encoding of integer positions [..., L] -> [..., L, D]."""
  half = features // 2
  inv_freq = np.exp(-np.log(10_000.0) * np.arange(half) / max(half - 1, 1))
  inv_freq = inv_freq.reshape((1,) * positions.ndim + (half,))
  angles = positions[..., None].astype(jnp.float32) * inv_freq
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if features % 2:
    enc = jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, 1)])
  return enc


@dataclasses.dataclass(frozen=True)
class LayerConfig:
  """What each encoder/decoder layer needs of the model's fields."""
  num_heads: int
  num_kv_heads: int | None
  mlp_dim: int
  dropout_rate: float
  attention_dropout_rate: float
  normalize_qk: bool
  implementation: str | None
  dtype: Any
  rotary_base: float | None = None


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout_rate: float
  dtype: Any

  @nn.compact
  def __call__(self, x_BLD, deterministic):
    h = nn.Dense(self.mlp_dim, dtype=self.dtype, name='wi')(x_BLD)
    h = nn.Dropout(self.dropout_rate)(nn.gelu(h), deterministic=deterministic)
    return nn.Dense(x_BLD.shape[-1], dtype=self.dtype, name='wo')(h)


class EncoderLayer(nn.Module):
  config: LayerConfig

  @nn.compact
  def __call__(self, x_BSD, mask, deterministic):
    c = self.config
    drop = functools.partial(nn.Dropout(c.dropout_rate), deterministic=deterministic)
    h = MultiHeadAttention(
        num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
        dropout_rate=c.attention_dropout_rate, normalize_qk=c.normalize_qk,
        rotary_base=c.rotary_base, dtype=c.dtype,
        implementation=c.implementation, name='self_attention')(
            nn.LayerNorm(dtype=c.dtype)(x_BSD), mask=mask,
            deterministic=deterministic)
    x_BSD = x_BSD + drop(h)
    h = MlpBlock(c.mlp_dim, c.dropout_rate, c.dtype)(
        nn.LayerNorm(dtype=c.dtype)(x_BSD), deterministic)
    return x_BSD + drop(h)


class DecoderLayer(nn.Module):
  config: LayerConfig
  decode: bool = False

  @nn.compact
  def __call__(self, y_BTD, memory_BSD, cross_mask, deterministic):
    c = self.config
    drop = functools.partial(nn.Dropout(c.dropout_rate), deterministic=deterministic)
    attention = functools.partial(
        MultiHeadAttention, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads,
        dropout_rate=c.attention_dropout_rate, normalize_qk=c.normalize_qk,
        dtype=c.dtype, implementation=c.implementation)
    h = attention(decode=self.decode, rotary_base=c.rotary_base,
                  name='self_attention')(
        nn.LayerNorm(dtype=c.dtype)(y_BTD), is_causal=not self.decode,
        deterministic=deterministic)
    y_BTD = y_BTD + drop(h)
    h, weights_BNTS = attention(name='cross_attention')(
        nn.LayerNorm(dtype=c.dtype)(y_BTD), memory_BSD, mask=cross_mask,
        deterministic=deterministic, return_weights=True)
    y_BTD = y_BTD + drop(h)
    h = MlpBlock(c.mlp_dim, c.dropout_rate, c.dtype)(
        nn.LayerNorm(dtype=c.dtype)(y_BTD), deterministic)
    return y_BTD + drop(h), weights_BNTS


class Model(nn.Module):
  """Encoder-decoder Transformer; see the module docstring for the fields.

  ``__call__(src_BS, tgt_in_BT)`` returns ``(logits_BTV, aux)`` with
  ``aux['cross_attention']`` float32 [num_layers, B, N, T, S]: every
  cross-attention layer and head. Decoding: ``init_decode`` then
  ``decode_step`` with ``decode=True`` and the 'cache' collection mutable
  (see attention.tasks.decoding).
  """
  src_vocab_size: int
  tgt_vocab_size: int
  num_layers: int = 3
  d_model: int = 128
  num_heads: int = 4
  num_kv_heads: int | None = None
  mlp_dim: int = 512
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  tie_embeddings: bool = True
  position: str = 'sinusoidal'
  max_length: int = 256
  normalize_qk: bool = False
  implementation: str | None = None
  pad_id: int = 0
  dtype: Any = jnp.float32
  decode: bool = False

  def setup(self):
    if self.position not in POSITIONS:
      raise ValueError(f'transformer: position must be one of {POSITIONS}, '
                       f'got {self.position!r}.')
    embed = functools.partial(
        nn.Embed, features=self.d_model, dtype=self.dtype,
        embedding_init=nn.initializers.normal(self.d_model ** -0.5))
    self.src_embed = embed(self.src_vocab_size)
    self.tgt_embed = embed(self.tgt_vocab_size)
    if self.position == 'learned':
      self.src_pos = embed(self.max_length)
      self.tgt_pos = embed(self.max_length)
    layer_config = LayerConfig(
        num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
        mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        normalize_qk=self.normalize_qk, implementation=self.implementation,
        dtype=self.dtype,
        rotary_base=10_000.0 if self.position == 'rope' else None)
    self.encoder_layers = [EncoderLayer(layer_config)
                           for _ in range(self.num_layers)]
    self.encoder_norm = nn.LayerNorm(dtype=self.dtype)
    self.decoder_layers = [DecoderLayer(layer_config, decode=self.decode)
                           for _ in range(self.num_layers)]
    self.decoder_norm = nn.LayerNorm(dtype=self.dtype)
    self.dropout = nn.Dropout(self.dropout_rate)
    if not self.tie_embeddings:
      self.logits_dense = nn.Dense(self.tgt_vocab_size, dtype=self.dtype)

  def _embed(self, tokens_BL, positions_BL, embed, pos_embed, deterministic):
    x = embed(tokens_BL) * jnp.sqrt(jnp.float32(self.d_model))
    if self.position == 'learned':
      if tokens_BL.shape[1] > self.max_length:
        raise ValueError(f'transformer: sequence of length {tokens_BL.shape[1]}'
                         f' exceeds max_length={self.max_length} of the '
                         "learned positions; raise it or use 'sinusoidal'.")
      x = x + pos_embed(positions_BL)
    elif self.position == 'sinusoidal':
      x = x + sinusoidal_positions(positions_BL, self.d_model)
    return self.dropout(x.astype(self.dtype), deterministic=deterministic)

  def encode(self, src_BS, *, deterministic=True):
    """Source tokens [B, S] -> memory [B, S, D]."""
    positions = jnp.broadcast_to(jnp.arange(src_BS.shape[1]), src_BS.shape)
    x = self._embed(src_BS, positions, self.src_embed,
                    getattr(self, 'src_pos', None), deterministic)
    mask = masks_lib.make_padding_mask(tokens=src_BS, pad_id=self.pad_id)
    for layer in self.encoder_layers:
      x = layer(x, mask, deterministic)
    return self.encoder_norm(x)

  def decode_tokens(self, memory_BSD, src_BS, tgt_in_BT, positions_BT, *,
                    deterministic=True):
    """Decoder stack -> (logits [B, T, V] float32, cross-attention weights
    [num_layers, B, N, T, S])."""
    y = self._embed(tgt_in_BT, positions_BT, self.tgt_embed,
                    getattr(self, 'tgt_pos', None), deterministic)
    cross_mask = masks_lib.make_padding_mask(tokens=src_BS, pad_id=self.pad_id)
    weights = []
    for layer in self.decoder_layers:
      y, w = layer(y, memory_BSD, cross_mask, deterministic)
      weights.append(w)
    y = self.decoder_norm(y)
    if self.tie_embeddings:
      logits = self.tgt_embed.attend(y)
    else:
      logits = self.logits_dense(y)
    return logits.astype(jnp.float32), jnp.stack(weights)

  def __call__(self, src_BS, tgt_in_BT, *, deterministic=True):
    memory = self.encode(src_BS, deterministic=deterministic)
    positions = jnp.broadcast_to(jnp.arange(tgt_in_BT.shape[1]),
                                 tgt_in_BT.shape)
    logits, weights = self.decode_tokens(memory, src_BS, tgt_in_BT, positions,
                                         deterministic=deterministic)
    return logits, {'cross_attention': weights}

  def init_decode(self, src_BS, max_length: int):
    """Encodes the source and sizes the self-attention caches (decode=True)."""
    memory = self.encode(src_BS)
    dummy = jnp.zeros((src_BS.shape[0], max_length), jnp.int32)
    self.decode_tokens(memory, src_BS, dummy, jnp.zeros_like(dummy))
    return {'memory': memory, 'src': src_BS,
            'position': jnp.zeros((), jnp.int32)}

  def decode_step(self, state, token_B):
    """One target token per sequence -> (logits [B, V], next state)."""
    positions = jnp.broadcast_to(state['position'], token_B.shape)[:, None]
    logits, _ = self.decode_tokens(state['memory'], state['src'],
                                   token_B[:, None], positions)
    return logits[:, 0], {**state, 'position': state['position'] + 1}
