"""The linen modules inside a flax.nnx model through flax.nnx.bridge.ToNNX."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.nnx import bridge

from attention import AdditiveAttention
from attention import MultiHeadAttention


class TinyNNXModel(nnx.Module):
  """Self-attention over a sequence, then an additive-attention pooling."""

  def __init__(self, x, rngs: nnx.Rngs):
    self.mha = bridge.ToNNX(MultiHeadAttention(num_heads=2), rngs=rngs)
    self.pool = bridge.ToNNX(AdditiveAttention(features=6), rngs=rngs)
    self.query = nnx.Param(jnp.ones((1, x.shape[-1])))
    bridge.lazy_init(self.mha, x)
    bridge.lazy_init(self.pool, self.query[...].repeat(x.shape[0], 0), x)

  def __call__(self, x, mask):
    h, weights = self.mha(x, is_causal=True, return_weights=True)
    query = jnp.broadcast_to(self.query[...], (x.shape[0], x.shape[-1]))
    pooled, alpha = self.pool(query, h, mask=mask)
    return pooled, weights, alpha


def test_modules_work_inside_an_nnx_model():
  x = jax.random.normal(jax.random.key(0), (3, 5, 8))
  mask = np.arange(5)[None] < np.array([5, 2, 4])[:, None]
  model = TinyNNXModel(x, nnx.Rngs(1))
  pooled, weights, alpha = model(x, mask)
  assert pooled.shape == (3, 8) and weights.shape == (3, 2, 5, 5)
  assert alpha.shape == (3, 5) and np.all(np.asarray(alpha)[~mask] == 0.0)

  # The same parameters in plain linen give the same outputs.
  mha_params = nnx.to_pure_dict(nnx.state(model.mha, nnx.Param))
  pool_params = nnx.to_pure_dict(nnx.state(model.pool, nnx.Param))
  h = MultiHeadAttention(num_heads=2).apply({'params': mha_params}, x,
                                            is_causal=True)
  want, _ = AdditiveAttention(features=6).apply(
      {'params': pool_params}, jnp.ones((3, 8)), h, mask=mask)
  np.testing.assert_allclose(pooled, want, rtol=1e-6, atol=1e-6)

  # And they train: one optimiser step lowers a simple loss.
  optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

  def loss_fn(model):
    return jnp.mean(model(x, mask)[0] ** 2)

  before = loss_fn(model)
  grads = nnx.grad(loss_fn)(model)
  optimizer.update(model, grads)
  assert loss_fn(model) < before
