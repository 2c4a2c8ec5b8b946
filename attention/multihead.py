"""Multi-head attention (flax.linen) with grouped-query heads and a prefill cache.

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention import dot_product as dot_product_lib
from attention import masks as masks_lib
from attention import rotary as rotary_lib

Array = jax.Array
Initializer = Callable[..., Array]


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention: project, attend per head, project back.

  With ``num_kv_heads`` unset and ``normalize_qk=False`` the parameters are
  exactly those of ``flax.linen.MultiHeadDotProductAttention``::

    query, key, value: {'kernel': [D, N, H], 'bias': [N, H]}
    out:               {'kernel': [N, H, Dout], 'bias': [Dout]}

  so a parameter tree of that module loads unchanged and gives the same
  outputs. With ``num_kv_heads=K`` (grouped-query attention; K=1 is
  multi-query) the key and value kernels are [D, K, H] and biases [K, H].

  Attributes:
    num_heads: N.
    qkv_features: N·H, default the query input dim D.
    out_features: Dout, default the query input dim D.
    num_kv_heads: K, dividing N; default N.
    dropout_rate: dropout on the attention weights, in [0, 1).
    use_bias: biases on the four projections.
    normalize_qk: LayerNorm (no bias) on each query and key head (QK-norm,
      ViT-22B), parameters 'query_ln' and 'key_ln' as in Flax.
    rotary_base: when set, rotary position embeddings (RoPE) with this base
      (10,000 in the paper) rotate each query and key head by its position, so
      scores depend on relative positions. Self-attention only; positions are
      ``positions`` or 0..T-1 (in decode mode, continuing from the cache).
      Applied after QK-norm. No parameters.
    decode: keep an autoregressive key/value cache in the 'cache' collection.
      Initialise with inputs of the maximum length S_max (that shapes the
      cache), then call with a multi-token prompt (prefill) and then single
      tokens; each call appends its keys/values and attends causally to
      everything cached, giving exactly the outputs of full causal attention.
    dtype: computation dtype (default: inferred from inputs and params).
    param_dtype: parameter dtype.
    precision: matmul precision.
    kernel_init, bias_init: initialisers of the projections.
    implementation: passed to :func:`attention.dot_product_attention`.
  """
  num_heads: int
  qkv_features: int | None = None
  out_features: int | None = None
  num_kv_heads: int | None = None
  dropout_rate: float = 0.0
  use_bias: bool = True
  normalize_qk: bool = False
  rotary_base: float | None = None
  decode: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: jax.lax.PrecisionLike = None
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()
  implementation: dot_product_lib.Implementation = None

  @nn.compact
  def __call__(self,
               inputs_q: Array,
               inputs_kv: Array | None = None,
               *,
               mask: Array | None = None,
               is_causal: bool = False,
               deterministic: bool = True,
               return_weights: bool = False,
               positions: Array | None = None):
    """Attend from ``inputs_q`` to ``inputs_kv`` (self-attention if None).

    Args:
      inputs_q: [B, T, D].
      inputs_kv: [B, S, Dkv]; default ``inputs_q``.
      mask: bool, broadcastable to [B, N, T, S], True = may attend. In decode
        mode S is the cache length S_max.
      is_causal: also apply the causal mask (implied in decode mode).
      deterministic: no dropout when True; otherwise the 'dropout' rng is used.
      return_weights: also return the attention weights.
      positions: int [B, T] or [T], the tokens' positions for ``rotary_base``;
        default 0..T-1, or in decode mode the cache's next T positions.

    Returns:
      [B, T, Dout]; with ``return_weights`` ``(outputs, weights)`` where
      weights are float32 [B, N, T, S].
    """
    name = type(self).__name__
    check_call(name, inputs_q, inputs_kv, rotary_base=self.rotary_base,
               positions=positions, decode=self.decode)
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    qkv_features = self.qkv_features or inputs_q.shape[-1]
    out_features = self.out_features or inputs_q.shape[-1]
    num_kv_heads = self.num_kv_heads or self.num_heads
    check_config(name, num_heads=self.num_heads, qkv_features=qkv_features,
                 num_kv_heads=num_kv_heads, dropout_rate=self.dropout_rate)
    head_dim = qkv_features // self.num_heads

    dense = functools.partial(
        nn.DenseGeneral, axis=-1, dtype=self.dtype,
        param_dtype=self.param_dtype, kernel_init=self.kernel_init,
        bias_init=self.bias_init, use_bias=self.use_bias,
        precision=self.precision)
    q_BTNH = dense(features=(self.num_heads, head_dim), name='query')(inputs_q)
    k_BSKH = dense(features=(num_kv_heads, head_dim), name='key')(inputs_kv)
    v_BSKH = dense(features=(num_kv_heads, head_dim), name='value')(inputs_kv)
    if self.normalize_qk:
      layer_norm = functools.partial(nn.LayerNorm, use_bias=False,
                                     dtype=self.dtype,
                                     param_dtype=self.param_dtype)
      q_BTNH = layer_norm(name='query_ln')(q_BTNH)
      k_BSKH = layer_norm(name='key_ln')(k_BSKH)
    if self.rotary_base is not None:
      index = None
      if self.decode and self.has_variable('cache', 'cache_index'):
        index = self.get_variable('cache', 'cache_index')
      q_BTNH, k_BSKH = rotate(q_BTNH, k_BSKH, positions, self.rotary_base,
                              index)

    if self.decode:
      k_BSKH, v_BSKH, decode_mask = self._update_cache(k_BSKH, v_BSKH)
      if decode_mask is not None:
        mask, is_causal = with_decode_mask(mask, decode_mask)

    dropout_rng = None
    if self.dropout_rate > 0.0 and not deterministic:
      dropout_rng = self.make_rng('dropout')
    out_BTNH, weights_BNTS = attend(
        self, q_BTNH, k_BSKH, v_BSKH, mask=mask, is_causal=is_causal,
        dropout_rng=dropout_rng, deterministic=deterministic,
        return_weights=return_weights)

    out_BTD = nn.DenseGeneral(
        features=out_features, axis=(-2, -1), dtype=self.dtype,
        param_dtype=self.param_dtype, kernel_init=self.kernel_init,
        bias_init=self.bias_init, use_bias=self.use_bias,
        precision=self.precision, name='out')(out_BTNH)
    return (out_BTD, weights_BNTS) if return_weights else out_BTD

  def _update_cache(self, k_BTKH, v_BTKH):
    """Appends this call's keys/values to the cache.

    Returns the full cached keys/values [B, S_max, K, H] and the causal mask
    [1, 1, T, S_max] of this call's queries against them; at initialisation
    (no cache yet) the cache is created with this call's length as S_max and
    the inputs pass through with no extra mask.
    """
    initialised = self.has_variable('cache', 'cached_key')
    cached_key = self.variable('cache', 'cached_key', jnp.zeros,
                               k_BTKH.shape, k_BTKH.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros,
                                 v_BTKH.shape, v_BTKH.dtype)
    cache_index = self.variable('cache', 'cache_index',
                                lambda: jnp.array(0, dtype=jnp.int32))
    if not initialised:
      return k_BTKH, v_BTKH, None
    key, value, index, causal_11TS = append_to_cache(
        type(self).__name__, cached_key.value, cached_value.value,
        cache_index.value, k_BTKH, v_BTKH)
    cached_key.value, cached_value.value = key, value
    cache_index.value = index
    return key, value, causal_11TS


# The layer's math, shared with the NNX layer (attention.nnx).


def check_config(name: str, *, num_heads: int, qkv_features: int,
                 num_kv_heads: int, dropout_rate: float,
                 in_features: tuple[int, ...] = ()) -> None:
  """Head counts, sizes and the dropout rate; a ValueError naming them."""
  for width in in_features:
    if not isinstance(width, int) or width < 1:
      raise ValueError(f'{name}: input feature sizes must be positive ints, '
                       f'got {in_features}.')
  if num_heads < 1 or qkv_features % num_heads:
    raise ValueError(f'{name}: qkv_features={qkv_features} must be divisible '
                     f'by num_heads={num_heads}.')
  if num_kv_heads < 1 or num_heads % num_kv_heads:
    raise ValueError(f'{name}: num_heads={num_heads} must be divisible '
                     f'by num_kv_heads={num_kv_heads}.')
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f'{name}: dropout_rate must be in [0, 1), got '
                     f'{dropout_rate}.')


def check_call(name: str, inputs_q: Array, inputs_kv: Array | None, *,
               rotary_base: float | None, positions: Array | None,
               decode: bool) -> None:
  """The call's inputs (``inputs_kv`` None: self-attention) against the
  layer's settings."""
  if rotary_base is not None and inputs_kv is not None:
    raise ValueError(
        f'{name}: rotary_base applies to self-attention '
        '(inputs_kv=None); queries and keys of two different sequences have '
        'no shared positions. Use rotary_base=None for cross-attention.')
  if positions is not None and rotary_base is None:
    raise ValueError(f'{name}: positions are only used with '
                     'rotary_base set; got positions with rotary_base=None.')
  if decode and inputs_kv is not None and inputs_kv is not inputs_q:
    raise ValueError(f'{name}: decode=True caches self-attention keys; for '
                     'cross-attention (inputs_kv given) use decode=False.')
  inputs_kv = inputs_q if inputs_kv is None else inputs_kv
  for arg, x in (('inputs_q', inputs_q), ('inputs_kv', inputs_kv)):
    if x.ndim != 3:
      raise ValueError(f'{name}: {arg} must be [B, length, features], got '
                       f'shape {x.shape}.')
  if inputs_q.shape[0] != inputs_kv.shape[0]:
    raise ValueError(f'{name}: inputs_q {inputs_q.shape} and inputs_kv '
                     f'{inputs_kv.shape} have different batch sizes.')


def rotate(q_BTNH: Array, k_BTKH: Array, positions: Array | None,
           base: float, cache_index: Array | None = None):
  """Rotary embeddings of queries and keys at ``positions`` (default
  0..T-1, after ``cache_index`` cached positions)."""
  if positions is None:
    positions = jnp.arange(q_BTNH.shape[1])[None]
    if cache_index is not None:
      positions = positions + cache_index
  return (rotary_lib.rotary_embedding(q_BTNH, positions, base),
          rotary_lib.rotary_embedding(k_BTKH, positions, base))


def append_to_cache(name: str, cached_key: Array, cached_value: Array,
                    index: Array, k_BTKH: Array, v_BTKH: Array):
  """This call's keys/values written into the cache at ``index``.

  Returns:
    (keys [B, S_max, K, H], values, index + T, the causal mask
    [1, 1, T, S_max] of this call's queries against the cache).
  """
  B, T, K, _ = k_BTKH.shape
  max_length = cached_key.shape[1]
  if cached_key.shape[::2] != (B, K) or T > max_length:
    raise ValueError(
        f'{name}(decode=True): this call has keys of shape '
        f'[B, T, K, H] = {k_BTKH.shape} but the cache holds '
        f'{cached_key.shape} ([B, S_max, K, H]); a call can add at '
        'most S_max tokens for the same batch and heads. Re-initialise the '
        'cache with inputs of the maximum length.')
  if not isinstance(index, jax.core.Tracer) and int(index) + T > max_length:
    raise ValueError(
        f'{name}(decode=True): the cache holds {int(index)} of '
        f'{max_length} positions and cannot take {T} more.')
  zero = jnp.zeros((), jnp.int32)
  start = (zero, index, zero, zero)
  key = jax.lax.dynamic_update_slice(cached_key,
                                     k_BTKH.astype(cached_key.dtype), start)
  value = jax.lax.dynamic_update_slice(
      cached_value, v_BTKH.astype(cached_value.dtype), start)
  causal_11TS = masks_lib.make_causal_mask(T, max_length, offset=index)
  return key, value, index + T, causal_11TS


def attend(layer, q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, *,
           mask: Array | None, is_causal: bool, dropout_rng: Array | None,
           deterministic: bool, return_weights: bool):
  """dot_product_attention with ``layer``'s dropout_rate, implementation and
  precision -> (outputs [B, T, N, H], weights [B, N, T, S] or None)."""
  attended = dot_product_lib.dot_product_attention(
      q_BTNH, k_BSKH, v_BSKH, mask=mask, is_causal=is_causal,
      dropout_rate=layer.dropout_rate, dropout_rng=dropout_rng,
      deterministic=deterministic, implementation=layer.implementation,
      return_weights=return_weights, precision=layer.precision)
  return attended if return_weights else (attended, None)


def with_decode_mask(mask: Array | None, decode_mask: Array):
  """(mask and the cache's causal mask, is_causal=False: it is in there)."""
  return masks_lib.combine_masks(mask, decode_mask), False
