"""attention.nnx.sasrec and attention.nnx.rnnsearch: two models in NNX.

Forward equality with the linen models from converted weights (both ways
for SASRec); each trained 200 steps on :smoke toy data (SASRec on the movie
world, the RNNsearch decoder step, its source and state as nnx.Cache, on
toy translation behind a small embedding encoder).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from attention.models import rnnsearch
from attention.models import sasrec
from attention import nnx as attn
from attention.nnx import rnnsearch as rnnsearch_nnx
from attention.nnx import sasrec as sasrec_nnx
from attention.tasks import movies as movies_task
from attention.tasks import translate as translate_task
from configs import mha_movies
from configs import mha_translate
from conftest import SRC
from conftest import TGT_IN

SIZES = dict(num_layers=2, d_model=16, num_heads=2, mlp_dim=32,
             dropout_rate=0.0)


@pytest.mark.parametrize('positions', ['absolute', 'recent'])
def test_sasrec_equals_linen_on_converted_weights_both_ways(positions):
  inputs = np.array([[3, 7, 1, 9, 0, 0], [5, 2, 8, 8, 4, 6]], np.int32)
  lengths = np.array([4, 6])
  candidates = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
  linen_model = sasrec.Model(num_items=12, max_len=6, positions=positions,
                             **SIZES)
  params = linen_model.init(jax.random.key(0), inputs, None)['params']
  model = sasrec_nnx.SASRec(12, 6, positions=positions, rngs=nnx.Rngs(1),
                            **SIZES)
  sasrec_nnx.load_linen_params(model, params)
  want, _ = linen_model.apply({'params': params}, inputs, None)
  np.testing.assert_allclose(model(inputs), want, rtol=1e-5, atol=1e-5)
  want, _ = linen_model.apply({'params': params}, inputs, lengths, None,
                              candidates, method='score_next')
  np.testing.assert_allclose(model.score_next(inputs, lengths, candidates),
                             want, rtol=1e-5, atol=1e-5)
  back = sasrec_nnx.linen_params(model)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def movie_task(tmp_path_factory):
  config = mha_movies.get_config('smoke')
  return movies_task.Task(config, str(tmp_path_factory.mktemp('nnx_task')))


def test_sasrec_trains_on_the_toy_world_and_scores_as_linen(movie_task):
  task, m = movie_task, movie_task.config.model
  model = sasrec_nnx.SASRec(
      task.num_items, int(task.config.data.max_len), num_layers=m.num_layers,
      d_model=m.d_model, num_heads=m.num_heads, mlp_dim=m.mlp_dim,
      dropout_rate=0.1, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, inputs, targets, mask):
    def loss_fn(model):
      logits = model(inputs, deterministic=False)
      logits = logits.at[..., 0].set(-1e9)  # item 0 is padding
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      return (loss * mask).sum() / mask.sum()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  batches = task.train_batches()
  losses = []
  for _ in range(200):
    b = next(batches)
    losses.append(float(train_step(model, optimizer, b['inputs'],
                                   b['targets'], b['mask'])))
  first, last = np.mean(losses[:20]), np.mean(losses[-20:])
  assert last < first - 1.0, (first, last)  # nats: it learnt the world
  # The linen model with the converted weights scores the same.
  params = sasrec_nnx.linen_params(model)
  batch = next(iter(task.eval_batches('validation')))
  want, _ = task.model.apply({'params': params}, batch['inputs'],
                             batch['length'], batch['user'], None,
                             method='score_next')
  got = model.score_next(batch['inputs'], batch['length'])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  metrics = task.eval_step(params, batch)
  assert float(metrics['loss'][1]) > 0


@pytest.mark.parametrize('query', ['previous_state', 'conditional'])
def test_rnnsearch_decoder_step_equals_linen(query):
  sizes = dict(embed_dim=8, hidden_dim=12, attention_dim=10, query=query,
               readout_dim=6)
  linen_model = rnnsearch.Model(src_vocab_size=12, tgt_vocab_size=10,
                                **sizes)
  variables = linen_model.init(jax.random.key(0), SRC, TGT_IN)
  want, aux = linen_model.apply(variables, SRC, TGT_IN)
  state = linen_model.apply(variables, SRC, 5, method='init_decode')
  memory = state['memory']
  decoder = rnnsearch_nnx.Decoder(10, rngs=nnx.Rngs(3), **sizes)
  with pytest.raises(ValueError, match='no source cached; call init_cache'):
    decoder(TGT_IN[:, 0])
  attn.load_linen_params(
      decoder, rnnsearch_nnx.linen_decoder_params(variables['params']))
  decoder.init_cache(memory['annotations'], memory['src_mask'], state['s'])
  step = nnx.jit(lambda decoder, token: decoder(token))
  logits, alphas = zip(*[step(decoder, TGT_IN[:, t])
                         for t in range(TGT_IN.shape[1])])
  np.testing.assert_allclose(jnp.stack(logits, 1), want, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(jnp.stack(alphas, 1), aux['alignment'],
                             rtol=1e-5, atol=1e-6)
  # The source and the state are nnx.Cache state; the state moved on.
  cache = nnx.to_pure_dict(nnx.state(decoder, nnx.Cache))
  assert set(cache) == {'annotations', 'projected_keys', 'src_mask', 'state'}
  assert not np.allclose(cache['state'], state['s'])


class ToyTranslator(nnx.Module):
  """A toy encoder (token + position embeddings as annotations) and the
  NNX RNNsearch decoder step."""

  def __init__(self, src_vocab, tgt_vocab, rngs):
    self.src_embed = nnx.Embed(src_vocab, 32, rngs=rngs)
    self.pos_embed = nnx.Embed(64, 32, rngs=rngs)
    self.decoder = rnnsearch_nnx.Decoder(tgt_vocab, embed_dim=16,
                                         hidden_dim=16, attention_dim=16,
                                         readout_dim=32, rngs=rngs)

  def __call__(self, src, tgt_in):
    annotations = self.src_embed(src) + self.pos_embed(
        jnp.arange(src.shape[1]))[None]
    self.decoder.init_cache(annotations, src > 0,
                            jnp.zeros((src.shape[0], 16)))
    return jnp.stack([self.decoder(tgt_in[:, t])[0]
                      for t in range(tgt_in.shape[1])], 1)


def test_rnnsearch_decoder_step_trains_on_toy_translation(tmp_path):
  task = translate_task.Task(mha_translate.get_config('smoke'), str(tmp_path))
  model = ToyTranslator(task.src_vocab.size, task.tgt_vocab.size,
                        nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  def loss_and_accuracy(model, batch):
    logits = model(batch['src'], batch['tgt_in'])
    mask = batch['tgt_mask']
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['tgt_out'])
    correct = logits.argmax(-1) == batch['tgt_out']
    return (loss * mask).sum() / mask.sum(), (correct * mask).sum() / mask.sum()

  @nnx.jit
  def train_step(model, optimizer, batch):
    (loss, _), grads = nnx.value_and_grad(loss_and_accuracy, has_aux=True)(
        model, batch)
    optimizer.update(model, grads)
    return loss

  batches = task.train_batches()
  keys = ('src', 'tgt_in', 'tgt_out', 'tgt_mask')
  losses = [float(train_step(model, optimizer,
                             {k: v for k, v in next(batches).items()
                              if k in keys}))
            for _ in range(200)]
  batch = next(iter(task.eval_batches('validation')))
  _, accuracy = nnx.jit(loss_and_accuracy)(
      model, {k: batch[k] for k in keys})
  # Measured: training loss 5.43 -> 0.35, validation token accuracy 47%
  # after 200 steps on the :smoke data (256 pairs).
  assert np.mean(losses[-20:]) < 0.2 * np.mean(losses[:20])
  assert float(accuracy) > 0.35
