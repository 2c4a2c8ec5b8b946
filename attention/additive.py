"""Additive (Bahdanau) and multiplicative (Luong 'general') attention, flax.linen.

Shapes use the package's axis legend (see attention/__init__.py).

Both modules share one calling convention, so an RNN decoder can swap them:

  projected = attn.project_keys(keys)            # once per source sequence
  context, weights = attn(query, keys, values, mask=mask,
                          projected_keys=projected)  # at every decoder step

``query`` is [B, Dq] (one decoder step) or [B, T, Dq] (all steps at once).
Masked keys get exactly zero weight; a query whose keys are all masked gets
zero weights and a zero context (see :mod:`attention.masks`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from attention import masks as masks_lib

Array = jax.Array
Initializer = Callable[..., Array]


class AdditiveAttention(nn.Module):
  """Bahdanau et al. (2014): e = vᵀ tanh(W_q·q + W_k·k + b).

  weights = masked softmax of e over the keys; context = Σ weights · values.

  Parameters::

    query: {'kernel': [Dq, A]}    key: {'kernel': [Dk, A]}
    bias: [A] (if use_bias)       v: [A]
    g: [] (if normalize; g·v/‖v‖ replaces v, the weight-normalised form)

  Attributes:
    features: A, the alignment size.
    use_bias: the bias b inside the tanh.
    normalize: weight-normalise v (Salimans & Kingma 2016), as in
      TensorFlow's BahdanauAttention(normalize=True).
    dtype: computation dtype (default: inferred from inputs and params).
    param_dtype: parameter dtype.
    kernel_init: initialiser of W_q and W_k.
    precision: matmul precision.
  """
  features: int
  use_bias: bool = True
  normalize: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  precision: jax.lax.PrecisionLike = None

  def setup(self):
    if self.features < 1:
      raise ValueError('AdditiveAttention: features (the alignment size A) '
                       f'must be positive, got {self.features}.')
    dense = lambda: nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             kernel_init=self.kernel_init,
                             precision=self.precision)
    self.query = dense()
    self.key = dense()
    if self.use_bias:
      self.bias = self.param('bias', nn.initializers.zeros_init(),
                             (self.features,), self.param_dtype)
    scale = self.features ** -0.5
    self.v = self.param('v', nn.initializers.normal(scale), (self.features,),
                        self.param_dtype)
    if self.normalize:
      self.g = self.param('g', nn.initializers.constant(scale), (),
                          self.param_dtype)

  def project_keys(self, keys: Array) -> Array:
    """W_k·k for every key: [B, S, Dk] -> [B, S, A]. Compute once per sequence."""
    check_rank('AdditiveAttention', 'keys', keys, (3,), '[B, S, Dk]')
    return self.key(keys)

  def __call__(self, query: Array, keys: Array, values: Array | None = None,
               *, mask: Array | None = None,
               projected_keys: Array | None = None):
    """Attend from ``query`` over ``keys``.

    Args:
      query: [B, Dq] or [B, T, Dq].
      keys: [B, S, Dk].
      values: [B, S, Dv]; default ``keys``.
      mask: bool [B, S] or [B, T, S] (T only with a [B, T, Dq] query);
        True = may attend.
      projected_keys: ``project_keys(keys)`` [B, S, A], to skip projecting
        the keys again at every decoder step.

    Returns:
      ``(context, weights)``: context [B, Dv] or [B, T, Dv] in the
      computation dtype; weights float32 [B, S] or [B, T, S].
    """
    name = type(self).__name__
    query_BTD, values, mask_BTS, single_step = prepare(
        name, query, keys, values, mask)
    if projected_keys is None:
      projected_keys = self.project_keys(keys)
    scores_BTS = additive_scores(
        name, query, self.query(query_BTD), projected_keys, keys,
        bias=self.bias if self.use_bias else None, v=self.v,
        g=self.g if self.normalize else None, dtype=self.dtype,
        precision=self.precision)
    return attend(scores_BTS, values, mask_BTS, single_step, self.precision)


class MultiplicativeAttention(nn.Module):
  """Luong et al. (2015) 'general' score: e = qᵀ W k (optionally × scale g).

  Parameters: 'kernel' [Dq, Dk]; 'scale' [] if use_scale. The score is computed
  as (qᵀW)·k, so the keys need no projection and :meth:`project_keys` returns
  them unchanged (it exists so the two modules are interchangeable).

  Attributes:
    use_scale: a learned scalar multiplying the scores (init 1).
    dtype, param_dtype, kernel_init, precision: as in AdditiveAttention.
  """
  use_scale: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  precision: jax.lax.PrecisionLike = None

  def project_keys(self, keys: Array) -> Array:
    """Nothing to precompute for this score: returns ``keys`` [B, S, Dk]."""
    check_rank('MultiplicativeAttention', 'keys', keys, (3,), '[B, S, Dk]')
    return keys

  @nn.compact
  def __call__(self, query: Array, keys: Array, values: Array | None = None,
               *, mask: Array | None = None,
               projected_keys: Array | None = None):
    """Same arguments and returns as :meth:`AdditiveAttention.__call__`."""
    name = type(self).__name__
    query_BTD, values, mask_BTS, single_step = prepare(
        name, query, keys, values, mask)
    keys = keys if projected_keys is None else projected_keys
    kernel = self.param('kernel', self.kernel_init,
                        (query_BTD.shape[-1], keys.shape[-1]),
                        self.param_dtype)
    scale = None
    if self.use_scale:
      scale = self.param('scale', nn.initializers.ones_init(), (),
                         self.param_dtype)
    scores_BTS = multiplicative_scores(name, query_BTD, keys, kernel, scale,
                                       dtype=self.dtype,
                                       precision=self.precision)
    return attend(scores_BTS, values, mask_BTS, single_step, self.precision)


BahdanauAttention = AdditiveAttention
LuongAttention = MultiplicativeAttention


# The layers' math, shared with the NNX layers (attention.nnx).


def additive_scores(name, query, q_BTA, k_BSA, keys, *, bias, v, g, dtype,
                    precision):
  """e = vᵀ tanh(q + k + b) [B, T, S] from the projected queries ``q_BTA``
  and keys ``k_BSA``, in ``dtype`` (default: of the query, keys and v);
  with ``g``, v is weight-normalised (g·v/‖v‖)."""
  features = v.shape[-1]
  if k_BSA.shape != keys.shape[:2] + (features,):
    raise ValueError(f'{name}: projected_keys must be '
                     f'[B, S, A] = {keys.shape[:2] + (features,)} '
                     f'(from project_keys), got {k_BSA.shape}.')
  dtype = nn.dtypes.canonicalize_dtype(query, keys, v, dtype=dtype)
  q_BTA, k_BSA = q_BTA.astype(dtype), k_BSA.astype(dtype)
  hidden_BTSA = q_BTA[:, :, None, :] + k_BSA[:, None, :, :]
  if bias is not None:
    hidden_BTSA = hidden_BTSA + bias.astype(dtype).reshape(1, 1, 1, -1)
  if g is not None:
    v = g * v / jnp.linalg.norm(v)
  return jnp.einsum('BTSA,A->BTS', jnp.tanh(hidden_BTSA), v.astype(dtype),
                    precision=precision)


def multiplicative_scores(name, query_BTD, keys_BSK, kernel, scale, *, dtype,
                          precision):
  """e = (qᵀ W)·k [B, T, S], times ``scale`` if given."""
  if kernel.shape != (query_BTD.shape[-1], keys_BSK.shape[-1]):
    raise ValueError(f'{name}: kernel {kernel.shape} does not map queries of '
                     f'{query_BTD.shape[-1]} features to keys of '
                     f'{keys_BSK.shape[-1]}.')
  query_BTD, keys_BSK, kernel = nn.dtypes.promote_dtype(
      query_BTD, keys_BSK, kernel, dtype=dtype)
  q_BTK = jnp.einsum('BTD,DK->BTK', query_BTD, kernel, precision=precision)
  scores_BTS = jnp.einsum('BTK,BSK->BTS', q_BTK, keys_BSK,
                          precision=precision)
  if scale is not None:
    scores_BTS = scores_BTS * scale.astype(scores_BTS.dtype)
  return scores_BTS


def attend(scores_BTS, values_BSDv, mask_BTS, single_step, precision):
  """Masked float32 softmax over S, then the weighted sum of the values."""
  weights_BTS = masks_lib.masked_softmax(scores_BTS, mask_BTS)
  context_BTDv = jnp.einsum('BTS,BSD->BTD',
                            weights_BTS.astype(values_BSDv.dtype),
                            values_BSDv, precision=precision)
  context_BTDv = context_BTDv.astype(scores_BTS.dtype)
  if single_step:
    return context_BTDv[:, 0], weights_BTS[:, 0]
  return context_BTDv, weights_BTS


def prepare(name, query, keys, values, mask):
  """Validates shapes; returns query [B, T, Dq], values, mask [B, T|1, S]."""
  check_rank(name, 'query', query, (2, 3), '[B, Dq] or [B, T, Dq]')
  check_rank(name, 'keys', keys, (3,), '[B, S, Dk]')
  values = keys if values is None else values
  check_rank(name, 'values', values, (3,), '[B, S, Dv]')
  B, S = keys.shape[:2]
  if query.shape[0] != B or values.shape[:2] != (B, S):
    raise ValueError(f'{name}: query {query.shape}, keys {keys.shape} and '
                     f'values {values.shape} must share B, and keys and '
                     'values must share S.')
  single_step = query.ndim == 2
  query_BTD = query[:, None, :] if single_step else query
  T = query_BTD.shape[1]
  if mask is not None:
    mask = jnp.asarray(mask)
    allowed = [(B, S)] if single_step else [(B, S), (B, T, S)]
    if mask.shape not in allowed:
      raise ValueError(f'{name}: mask must be '
                       f'{" or ".join(map(str, allowed))} ([B, S] or '
                       f'[B, T, S]) for query {query.shape} and keys '
                       f'{keys.shape}, got {mask.shape}.')
    if mask.ndim == 2:
      mask = mask[:, None, :]
  return query_BTD, values, mask, single_step


def check_rank(name, arg, x, ranks, layout):
  if getattr(x, 'ndim', None) not in ranks:
    raise ValueError(f'{name}: {arg} must be {layout}, got shape '
                     f'{getattr(x, "shape", type(x))}.')
