"""Additive (Bahdanau) and multiplicative (Luong) attention against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import AdditiveAttention
from attention import BahdanauAttention
from attention import LuongAttention

B, T, S, DQ, DK, DV, A = 2, 3, 6, 5, 7, 4, 8


def masked_softmax_np(scores, mask):
  scores = np.where(mask, scores, -np.inf)
  top = scores.max(-1, keepdims=True)
  exp = np.where(mask, np.exp(scores - np.where(np.isfinite(top), top, 0)), 0)
  denom = exp.sum(-1, keepdims=True)
  return np.divide(exp, denom, out=np.zeros_like(exp), where=denom > 0)


def additive_np(params, query, keys, values, mask):
  """e[b,t,s] = v . tanh(q[b,t] W_q + k[b,s] W_k + bias), in float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  v = p['v']
  if 'g' in p:
    v = p['g'] * v / np.sqrt(np.sum(v * v))
  scores = np.zeros((query.shape[0], query.shape[1], keys.shape[1]))
  for b in range(query.shape[0]):
    for t in range(query.shape[1]):
      for s in range(keys.shape[1]):
        hidden = (query[b, t] @ p['query']['kernel'] +
                  keys[b, s] @ p['key']['kernel'] + p.get('bias', 0.0))
        scores[b, t, s] = v @ np.tanh(hidden)
  weights = masked_softmax_np(scores, mask)
  return np.einsum('bts,bsv->btv', weights, values), weights


def data(seed):
  rng = np.random.default_rng(seed)
  query = rng.normal(size=(B, T, DQ))
  keys = rng.normal(size=(B, S, DK))
  values = rng.normal(size=(B, S, DV))
  mask = np.ones((B, T, S), bool)
  mask[0, :, 4:] = False        # batch 0: padding keys
  mask[1, 1] = False            # batch 1, step 1: attends to nothing
  mask[1, 2, [0, 3]] = False
  return query, keys, values, mask


def as_f32(*arrays):
  return [jnp.asarray(a, jnp.float32) for a in arrays]


@pytest.mark.parametrize('normalize, use_bias', [(False, True), (True, True),
                                                 (False, False)])
def test_additive_all_steps_equals_numpy(normalize, use_bias):
  query, keys, values, mask = data(0)
  module = AdditiveAttention(A, normalize=normalize, use_bias=use_bias)
  variables = module.init(jax.random.key(1), *as_f32(query, keys, values))
  params = variables['params']
  if use_bias:  # a nonzero bias, so the test sees it
    params = {**params, 'bias': jnp.linspace(-1, 1, A)}
  context, weights = module.apply({'params': params},
                                  *as_f32(query, keys, values), mask=mask)
  want_context, want_weights = additive_np(params, query, keys, values, mask)
  assert context.shape == (B, T, DV) and weights.shape == (B, T, S)
  np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(context, want_context, rtol=1e-5, atol=1e-5)
  # Masked keys have exactly zero weight; the empty row is all zeros.
  assert np.all(np.asarray(weights)[~mask] == 0.0)
  assert np.all(np.asarray(context)[1, 1] == 0.0)
  np.testing.assert_allclose(np.asarray(weights).sum(-1)[mask.any(-1)], 1.0,
                             rtol=1e-6)


def test_parameter_shapes_and_alias():
  assert BahdanauAttention is AdditiveAttention
  query, keys, _, _ = data(2)
  params = AdditiveAttention(A, normalize=True).init(
      jax.random.key(0), *as_f32(query[:, 0], keys))['params']
  assert jax.tree.map(jnp.shape, params) == {
      'query': {'kernel': (DQ, A)}, 'key': {'kernel': (DK, A)},
      'bias': (A,), 'v': (A,), 'g': ()}
  params = AdditiveAttention(A, use_bias=False).init(
      jax.random.key(0), *as_f32(query[:, 0], keys))['params']
  assert 'bias' not in params and 'g' not in params


def test_single_decoder_step_with_key_mask():
  query, keys, values, mask = data(3)
  key_mask = mask[:, 0]  # [B, S]
  module = AdditiveAttention(A)
  variables = module.init(jax.random.key(4), *as_f32(query[:, 0], keys))
  context, weights = module.apply(variables, *as_f32(query[:, 0], keys, values),
                                  mask=key_mask)
  want_context, want_weights = additive_np(
      variables['params'], query[:, :1], keys, values, key_mask[:, None])
  assert context.shape == (B, DV) and weights.shape == (B, S)
  np.testing.assert_allclose(weights, want_weights[:, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(context, want_context[:, 0], rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(weights)[~key_mask] == 0.0)


@pytest.mark.parametrize('module', [AdditiveAttention(A), LuongAttention()])
def test_projected_keys_once_give_identical_results(module):
  query, keys, values, mask = data(5)
  query, keys, values = as_f32(query, keys, values)
  variables = module.init(jax.random.key(6), query[:, 0], keys)

  @jax.jit
  def per_step_with_projection(query, keys, values):
    projected = module.apply(variables, keys, method='project_keys')
    def step(_, q_t_and_mask):
      q_t, mask_t = q_t_and_mask
      return None, module.apply(variables, q_t, keys, values, mask=mask_t,
                                projected_keys=projected)
    _, (context, weights) = jax.lax.scan(
        step, None, (query.swapaxes(0, 1), mask.swapaxes(0, 1)))
    return context.swapaxes(0, 1), weights.swapaxes(0, 1)

  @jax.jit
  def per_step_plain(query, keys, values):
    def step(_, q_t_and_mask):
      q_t, mask_t = q_t_and_mask
      return None, module.apply(variables, q_t, keys, values, mask=mask_t)
    _, (context, weights) = jax.lax.scan(
        step, None, (query.swapaxes(0, 1), mask.swapaxes(0, 1)))
    return context.swapaxes(0, 1), weights.swapaxes(0, 1)

  got = per_step_with_projection(query, keys, values)
  want = per_step_plain(query, keys, values)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  # And the step-by-step results equal the all-steps-at-once call.
  context, weights = module.apply(variables, query, keys, values, mask=mask)
  np.testing.assert_allclose(got[0], context, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got[1], weights, rtol=1e-6, atol=1e-7)


def test_fully_masked_row_has_finite_zero_gradients():
  query, keys, values, mask = data(7)
  module = AdditiveAttention(A)
  variables = module.init(jax.random.key(8), *as_f32(query, keys))

  def loss(params, query):
    context, weights = module.apply({'params': params}, query,
                                    *as_f32(keys, values), mask=mask)
    return jnp.sum(context ** 2) + jnp.sum(weights ** 2)

  grads = jax.grad(loss, argnums=(0, 1))(variables['params'],
                                         *as_f32(query))
  for g in jax.tree.leaves(grads):
    assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(grads[1][1, 1], 0.0)  # the empty row


def test_luong_general_score_equals_numpy():
  query, keys, values, mask = data(9)
  module = LuongAttention(use_scale=True)
  variables = module.init(jax.random.key(10), *as_f32(query, keys))
  params = {**variables['params'], 'scale': jnp.float32(0.5)}
  assert params['kernel'].shape == (DQ, DK)
  context, weights = module.apply({'params': params},
                                  *as_f32(query, keys, values), mask=mask)
  kernel = np.asarray(params['kernel'], np.float64)
  scores = 0.5 * np.einsum('btd,dk,bsk->bts', query, kernel, keys)
  want_weights = masked_softmax_np(scores, mask)
  np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      context, np.einsum('bts,bsv->btv', want_weights, values), rtol=1e-5,
      atol=1e-5)


def test_bfloat16_stays_finite():
  query, keys, values, mask = data(11)
  module = AdditiveAttention(A, dtype=jnp.bfloat16)
  q, k, v = (jnp.asarray(a * 50, jnp.bfloat16) for a in (query, keys, values))
  variables = module.init(jax.random.key(12), q, k)
  context, weights = module.apply(variables, q, k, v, mask=mask)
  assert context.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(context, np.float32)))
  assert np.all(np.asarray(weights)[~mask] == 0.0)


@pytest.mark.parametrize('args, kwargs, message', [
    ((np.zeros((B, T, DQ, 1)), np.zeros((B, S, DK))), {},
     r'query must be \[B, Dq\] or \[B, T, Dq\]'),
    ((np.zeros((B, DQ)), np.zeros((B, DK))), {}, r'keys must be \[B, S, Dk\]'),
    ((np.zeros((B, DQ)), np.zeros((B, S, DK)), np.zeros((B, S + 1, DV))), {},
     'must share S'),
    ((np.zeros((B, DQ)), np.zeros((B, S, DK))),
     {'mask': np.ones((B, T, S), bool)}, r'mask must be \(2, 6\)'),
    ((np.zeros((B, T, DQ)), np.zeros((B, S, DK))),
     {'mask': np.ones((B, S + 1), bool)}, r'got \(2, 7\)'),
    ((np.zeros((B, DQ)), np.zeros((B, S, DK))),
     {'projected_keys': np.zeros((B, S, A + 1))}, 'projected_keys must be'),
])
def test_bad_input_is_a_clear_value_error(args, kwargs, message):
  with pytest.raises(ValueError, match=message):
    AdditiveAttention(A).init(jax.random.key(0), *as_f32(*args), **kwargs)
