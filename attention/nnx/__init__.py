"""The layers as native Flax NNX modules: ``from attention import nnx as attn``.

  MultiHeadAttention                  as attention.MultiHeadAttention
  AdditiveAttention (BahdanauAttention) as attention.AdditiveAttention
  MultiplicativeAttention (LuongAttention) as attention.MultiplicativeAttention

and two models built on them: ``attention.nnx.sasrec`` (SASRec) and
``attention.nnx.rnnsearch`` (RNNsearch's decoder step, its source memory and
state as ``nnx.Cache``).

They are eager NNX modules: the input sizes are given at construction, the
parameters exist once it returns, dropout draws from the ``nnx.Rngs`` given
there (or to the call), and the decode cache is ``nnx.Cache`` state made by
:meth:`MultiHeadAttention.init_cache`. The math is the linen layers' own: both
call the same functions of attention.multihead and attention.additive
(shape checks, the cache update, rotary positions, dot_product_attention, the
additive and multiplicative scores, the masked softmax), so the two APIs give
the same outputs, fully masked rows included (zero weights, zero output).

The parameter trees are the linen layers' trees, name for name and shape for
shape (and so flax.linen.MultiHeadDotProductAttention's and
flax.nnx.MultiHeadAttention's for the default multi-head layer):

  params = linen_params(nnx_layer)         # NNX -> a linen 'params' dict
  load_linen_params(nnx_layer, params)     # a linen 'params' dict -> NNX

Shapes use the package's axis legend (see attention/__init__.py).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from attention import additive as additive_lib
from attention import dot_product as dot_product_lib
from attention import multihead as multihead_lib

Array = jax.Array
Initializer = Callable[..., Array]
default_kernel_init = nnx.initializers.lecun_normal()


class MultiHeadAttention(nnx.Module):
  """Multi-head dot-product attention; see attention.MultiHeadAttention.

  Parameters (as the linen layer's)::

    query:      LinearGeneral, kernel [D, N, H], bias [N, H]
    key, value: LinearGeneral, kernel [Dkv, K, H], bias [K, H]
    out:        LinearGeneral, kernel [N, H, Dout], bias [Dout]
    query_ln, key_ln: LayerNorm scale [H] (normalize_qk)

  Args:
    num_heads: N.
    in_features: D, the query inputs' width.
    qkv_features: N·H, default D.
    out_features: Dout, default D.
    in_kv_features: Dkv, the key/value inputs' width; default D.
    num_kv_heads: K, dividing N; default N (K=1: multi-query).
    dropout_rate: dropout on the attention weights, in [0, 1).
    use_bias: biases on the four projections.
    normalize_qk: LayerNorm (no bias) on each query and key head.
    rotary_base: rotary position embeddings with this base (self-attention).
    decode: attend over a key/value cache; call :meth:`init_cache` first.
    deterministic: the default of the call's ``deterministic`` (no dropout).
    dtype, param_dtype, precision, kernel_init, bias_init, implementation:
      as in the linen layer.
    rngs: parameter initialisation, and the 'dropout' stream the layer keeps
      for its dropout when ``dropout_rate > 0``.
  """

  def __init__(self, num_heads: int, in_features: int,
               qkv_features: int | None = None,
               out_features: int | None = None, *,
               in_kv_features: int | None = None,
               num_kv_heads: int | None = None, dropout_rate: float = 0.0,
               use_bias: bool = True, normalize_qk: bool = False,
               rotary_base: float | None = None, decode: bool = False,
               deterministic: bool = True, dtype: Any = None,
               param_dtype: Any = jnp.float32,
               precision: jax.lax.PrecisionLike = None,
               kernel_init: Initializer = default_kernel_init,
               bias_init: Initializer = nnx.initializers.zeros_init(),
               implementation: dot_product_lib.Implementation = None,
               rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.in_features = in_features
    self.qkv_features = qkv_features or in_features
    self.out_features = out_features or in_features
    self.in_kv_features = in_kv_features or in_features
    self.num_kv_heads = num_kv_heads or num_heads
    multihead_lib.check_config(
        type(self).__name__, in_features=(in_features, self.in_kv_features),
        num_heads=num_heads, qkv_features=self.qkv_features,
        num_kv_heads=self.num_kv_heads, dropout_rate=dropout_rate)
    self.head_dim = self.qkv_features // num_heads
    self.dropout_rate = dropout_rate
    self.normalize_qk = normalize_qk
    self.rotary_base = rotary_base
    self.decode = decode
    self.deterministic = deterministic
    self.dtype, self.param_dtype = dtype, param_dtype
    self.precision = precision
    self.implementation = implementation

    def dense(in_features, out_features, axis=-1):
      return nnx.LinearGeneral(
          in_features, out_features, axis=axis, use_bias=use_bias,
          dtype=dtype, param_dtype=param_dtype, kernel_init=kernel_init,
          bias_init=bias_init, precision=precision, rngs=rngs)

    heads, kv_heads = (num_heads, self.head_dim), (self.num_kv_heads,
                                                    self.head_dim)
    self.query = dense(in_features, heads)
    self.key = dense(self.in_kv_features, kv_heads)
    self.value = dense(self.in_kv_features, kv_heads)
    if normalize_qk:
      self.query_ln = nnx.LayerNorm(self.head_dim, use_bias=False, dtype=dtype,
                                    param_dtype=param_dtype, rngs=rngs)
      self.key_ln = nnx.LayerNorm(self.head_dim, use_bias=False, dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs)
    else:
      self.query_ln = self.key_ln = nnx.data(None)
    self.out = dense(heads, self.out_features, axis=(-2, -1))
    self.rngs = rngs.dropout.fork() if dropout_rate > 0 else nnx.data(None)
    self.cached_key = self.cached_value = nnx.data(None)
    self.cache_index = nnx.data(None)

  def init_cache(self, batch_size: int, max_length: int,
                 dtype: Any = None) -> None:
    """Makes an empty key/value cache of ``max_length`` positions.

    ``dtype``: of the cached keys and values; default the computation dtype
    (``dtype``, else float32). Calling it again empties the cache.
    """
    if not self.decode:
      raise ValueError(f'{type(self).__name__}: init_cache needs decode=True.')
    shape = (batch_size, max_length, self.num_kv_heads, self.head_dim)
    dtype = dtype or self.dtype or jnp.float32
    self.cached_key = nnx.Cache(jnp.zeros(shape, dtype))
    self.cached_value = nnx.Cache(jnp.zeros(shape, dtype))
    self.cache_index = nnx.Cache(jnp.array(0, dtype=jnp.int32))

  def __call__(self, inputs_q: Array, inputs_kv: Array | None = None, *,
               mask: Array | None = None, is_causal: bool = False,
               deterministic: bool | None = None,
               return_weights: bool = False, positions: Array | None = None,
               rngs: nnx.Rngs | None = None):
    """As attention.MultiHeadAttention.__call__; ``rngs`` overrides the
    layer's dropout stream for this call.

    In decode mode each call appends its keys and values to the cache (a
    multi-token prompt, then single tokens) and attends causally to all that
    is cached: the outputs of full causal attention.
    """
    name = type(self).__name__
    multihead_lib.check_call(name, inputs_q, inputs_kv,
                             rotary_base=self.rotary_base, positions=positions,
                             decode=self.decode)
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    for arg, x, width in (('inputs_q', inputs_q, self.in_features),
                          ('inputs_kv', inputs_kv, self.in_kv_features)):
      if x.shape[-1] != width:
        raise ValueError(f'{name}: {arg} has {x.shape[-1]} features, but the '
                         f'layer was built for {width}.')
    q_BTNH = self.query(inputs_q)
    k_BSKH = self.key(inputs_kv)
    v_BSKH = self.value(inputs_kv)
    if self.normalize_qk:
      q_BTNH, k_BSKH = self.query_ln(q_BTNH), self.key_ln(k_BSKH)
    if self.decode and self.cached_key is None:
      raise ValueError(f'{name}(decode=True): the cache is not initialised; '
                       'call init_cache(batch_size, max_length) first.')
    index = self.cache_index[...] if self.decode else None
    if self.rotary_base is not None:
      q_BTNH, k_BSKH = multihead_lib.rotate(q_BTNH, k_BSKH, positions,
                                            self.rotary_base, index)
    if self.decode:
      key, value, index, decode_mask = multihead_lib.append_to_cache(
          name, self.cached_key[...], self.cached_value[...], index, k_BSKH,
          v_BSKH)
      self.cached_key[...], self.cached_value[...] = key, value
      self.cache_index[...] = index
      k_BSKH, v_BSKH = key, value
      mask, is_causal = multihead_lib.with_decode_mask(mask, decode_mask)

    deterministic = (self.deterministic if deterministic is None
                     else deterministic)
    dropout_rng = None
    if self.dropout_rate > 0.0 and not deterministic:
      stream = rngs.dropout if rngs is not None else self.rngs
      if stream is None:
        raise ValueError(f'{name}: dropout needs rngs (at construction or '
                         'in the call).')
      dropout_rng = stream()
    out_BTNH, weights_BNTS = multihead_lib.attend(
        self, q_BTNH, k_BSKH, v_BSKH, mask=mask, is_causal=is_causal,
        dropout_rng=dropout_rng, deterministic=deterministic,
        return_weights=return_weights)
    out_BTD = self.out(out_BTNH)
    return (out_BTD, weights_BNTS) if return_weights else out_BTD


class AdditiveAttention(nnx.Module):
  """Bahdanau et al. (2014): e = vᵀ tanh(W_q·q + W_k·k + b); see
  attention.AdditiveAttention (parameters query, key, bias, v, g).

  Args:
    query_features: Dq.
    key_features: Dk.
    features: A, the alignment size.
    use_bias, normalize, dtype, param_dtype, kernel_init, precision: as in
      the linen layer.
    rngs: parameter initialisation.
  """

  def __init__(self, query_features: int, key_features: int, features: int,
               *, use_bias: bool = True, normalize: bool = False,
               dtype: Any = None, param_dtype: Any = jnp.float32,
               kernel_init: Initializer = default_kernel_init,
               precision: jax.lax.PrecisionLike = None, rngs: nnx.Rngs):
    name = type(self).__name__
    _check_sizes(name, query_features=query_features,
                 key_features=key_features, features=features)
    self.features, self.use_bias, self.normalize = features, use_bias, normalize
    self.dtype, self.precision = dtype, precision

    def dense(in_features):
      return nnx.Linear(in_features, features, use_bias=False, dtype=dtype,
                        param_dtype=param_dtype, kernel_init=kernel_init,
                        precision=precision, rngs=rngs)

    self.query = dense(query_features)
    self.key = dense(key_features)
    scale = features ** -0.5
    self.bias = (nnx.Param(jnp.zeros((features,), param_dtype)) if use_bias
                 else nnx.data(None))
    self.v = nnx.Param(nnx.initializers.normal(scale)(
        rngs.params(), (features,), param_dtype))
    self.g = (nnx.Param(jnp.full((), scale, param_dtype)) if normalize
              else nnx.data(None))

  def project_keys(self, keys: Array) -> Array:
    """W_k·k for every key: [B, S, Dk] -> [B, S, A]; once per sequence."""
    additive_lib.check_rank(type(self).__name__, 'keys', keys, (3,),
                            '[B, S, Dk]')
    return self.key(keys)

  def __call__(self, query: Array, keys: Array, values: Array | None = None,
               *, mask: Array | None = None,
               projected_keys: Array | None = None):
    """As attention.AdditiveAttention.__call__: (context, weights)."""
    name = type(self).__name__
    query_BTD, values, mask_BTS, single_step = additive_lib.prepare(
        name, query, keys, values, mask)
    if projected_keys is None:
      projected_keys = self.project_keys(keys)
    scores_BTS = additive_lib.additive_scores(
        name, query, self.query(query_BTD), projected_keys, keys,
        bias=None if self.bias is None else self.bias[...], v=self.v[...],
        g=None if self.g is None else self.g[...], dtype=self.dtype,
        precision=self.precision)
    return additive_lib.attend(scores_BTS, values, mask_BTS, single_step,
                               self.precision)


class MultiplicativeAttention(nnx.Module):
  """Luong et al. (2015) 'general' score e = qᵀ W k (× g); see
  attention.MultiplicativeAttention (parameters kernel [Dq, Dk], scale).

  Args:
    query_features: Dq.
    key_features: Dk.
    use_scale, dtype, param_dtype, kernel_init, precision: as in the linen
      layer.
    rngs: parameter initialisation.
  """

  def __init__(self, query_features: int, key_features: int, *,
               use_scale: bool = False, dtype: Any = None,
               param_dtype: Any = jnp.float32,
               kernel_init: Initializer = default_kernel_init,
               precision: jax.lax.PrecisionLike = None, rngs: nnx.Rngs):
    _check_sizes(type(self).__name__, query_features=query_features,
                 key_features=key_features)
    self.kernel = nnx.Param(kernel_init(
        rngs.params(), (query_features, key_features), param_dtype))
    self.scale = (nnx.Param(jnp.ones((), param_dtype)) if use_scale
                  else nnx.data(None))
    self.dtype, self.precision = dtype, precision

  def project_keys(self, keys: Array) -> Array:
    """Nothing to precompute for this score: ``keys`` [B, S, Dk]."""
    additive_lib.check_rank(type(self).__name__, 'keys', keys, (3,),
                            '[B, S, Dk]')
    return keys

  def __call__(self, query: Array, keys: Array, values: Array | None = None,
               *, mask: Array | None = None,
               projected_keys: Array | None = None):
    """As attention.MultiplicativeAttention.__call__: (context, weights)."""
    name = type(self).__name__
    query_BTD, values, mask_BTS, single_step = additive_lib.prepare(
        name, query, keys, values, mask)
    keys = keys if projected_keys is None else projected_keys
    scores_BTS = additive_lib.multiplicative_scores(
        name, query_BTD, keys, self.kernel[...],
        None if self.scale is None else self.scale[...], dtype=self.dtype,
        precision=self.precision)
    return additive_lib.attend(scores_BTS, values, mask_BTS, single_step,
                               self.precision)


BahdanauAttention = AdditiveAttention
LuongAttention = MultiplicativeAttention


def linen_params(module: nnx.Module) -> dict[str, Any]:
  """The module's parameters as the linen layer's 'params' dict."""
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def load_linen_params(module: nnx.Module, params: dict[str, Any]) -> None:
  """Sets ``module``'s parameters from a linen 'params' dict (in place).

  Takes the trees of attention's linen layers and, for MultiHeadAttention,
  of flax.linen.MultiHeadDotProductAttention (the same names and shapes).

  Raises:
    ValueError: a parameter is missing, unexpected or of another shape,
      named by its path.
  """
  state = nnx.state(module, nnx.Param)
  want = {_path(p): v.shape for p, v in _leaves(nnx.to_pure_dict(state))}
  given = {_path(p): getattr(v, 'shape', None) for p, v in _leaves(params)}
  name = type(module).__name__
  for path in sorted(set(want) | set(given)):
    if path not in given:
      raise ValueError(f'load_linen_params({name}): the parameters have no '
                       f'{path!r} (shape {want[path]}).')
    if path not in want:
      raise ValueError(f'load_linen_params({name}): {path!r} is not a '
                       f'parameter of this layer; it has {sorted(want)}.')
    if tuple(given[path]) != tuple(want[path]):
      raise ValueError(f'load_linen_params({name}): {path!r} has shape '
                       f'{tuple(given[path])}, the layer {want[path]}.')
  nnx.replace_by_pure_dict(state, params)
  nnx.update(module, state)


def _leaves(tree) -> Sequence[tuple[Any, Any]]:
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def _path(keys) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in keys)


def _check_sizes(name: str, **sizes: int) -> None:
  for arg, size in sizes.items():
    if not isinstance(size, int) or size < 1:
      raise ValueError(f'{name}: {arg} must be a positive int, got {size!r}.')
