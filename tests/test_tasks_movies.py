"""The movie task through the one training loop, on the :smoke configs:
train, evaluate, leave-one-out hygiene, negatives and plots."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention.data import movies as movie_data
from attention.tasks import movies as movies_task
from attention.tasks import ranking
from attention.training import train_lib
from configs import bahdanau_movies
from configs import mf_movies
from configs import mha_movies
from conftest import read_metrics

CONFIGS = {'mha_movies': mha_movies, 'bahdanau_movies': bahdanau_movies,
           'mf_movies': mf_movies}
KS = (1, 5, 10)
PROTOCOLS = ('full', 'sampled_uniform100', 'sampled_pop100')
DOCUMENTED = [f'{p}/{m}@{k}' for p in PROTOCOLS for m in ('hr', 'ndcg')
              for k in KS] + ['oracle/ndcg@10']


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Each smoke config trained (4 steps) and evaluated by eval.py's function."""
  out = {}
  for name, module in CONFIGS.items():
    workdir = str(tmp_path_factory.mktemp(name))
    config = module.get_config('smoke')
    last_eval = train_lib.train_and_evaluate(config, workdir)
    results = train_lib.evaluate_checkpoint(config, workdir)
    out[name] = (config, workdir, last_eval, results)
  return out


@pytest.fixture(scope='module')
def task(tmp_path_factory):
  config = mha_movies.get_config('smoke')
  return movies_task.Task(config, str(tmp_path_factory.mktemp('task')))


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_smoke_train_steps_of_each_config(runs, name):
  config, workdir, last_eval, _ = runs[name]
  rows = read_metrics(workdir)
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  assert len(losses) == 2 and all(np.isfinite(losses))
  assert losses[-1] < np.log(config.data.num_items + 1) + 1.0 or (
      config.loss != 'softmax')
  assert {'eval/full/ndcg@10', 'eval/loss', 'eval/share_of_oracle/ndcg@10',
          'eval/popularity/full/ndcg@10'} <= set(rows[-1])
  assert 0.0 <= last_eval['full/ndcg@10'] <= last_eval['full/hr@10'] <= 1.0


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_eval_writes_every_documented_key(runs, name):
  _, workdir, _, results = runs[name]
  with open(os.path.join(workdir, 'eval_results.json')) as f:
    written = json.load(f)
  assert written == results and written['step'] == 4
  for key in DOCUMENTED + [f'popularity/{k}' for k in DOCUMENTED[:-1]] + [
      'share_of_oracle/ndcg@10', 'oracle/hr@10', 'oracle/expected_ndcg@10',
      'loss']:
    assert key in written, key
    assert np.isfinite(written[key]), key
  for key in DOCUMENTED:
    assert 0.0 <= written[key] <= 1.0, key
  # The oracle ranks by the true distribution: the ceiling on this world.
  assert written['oracle/ndcg@10'] > written['popularity/full/ndcg@10']
  assert written['share_of_oracle/ndcg@10'] == pytest.approx(
      written['full/ndcg@10'] / written['oracle/ndcg@10'])


@pytest.mark.parametrize('name, stems', [
    ('mha_movies', ['layer0']), ('bahdanau_movies', ['candidates']),
    ('mf_movies', [])])
def test_attention_plots_and_matrices(runs, name, stems):
  _, workdir, _, _ = runs[name]
  for folder in ('step_4', 'test_step_4'):
    path = os.path.join(workdir, 'alignments', folder)
    if not stems:
      assert not os.path.exists(path)
      continue
    files = os.listdir(path)
    for stem in stems:
      png = [f for f in files if f.endswith(f'_{stem}.png')]
      npy = [f for f in files if f.endswith(f'_{stem}.npy')]
      assert len(png) == len(npy) == 1, files
      weights = np.load(os.path.join(path, npy[0]))
      # Every row is a distribution over the history (causal rows for
      # self-attention: row t over the movies up to t).
      np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
      if stem.startswith('layer'):
        np.testing.assert_array_equal(np.triu(weights, 1), 0.0)


def test_tensorboard_has_attention_images(runs):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  _, workdir, _, _ = runs['bahdanau_movies']
  events = event_accumulator.EventAccumulator(workdir, size_guidance={
      'images': 0, 'scalars': 0})
  events.Reload()
  # TensorBoard tags cannot hold '@': tensorboardX writes 'ndcg_10'.
  assert 'eval/full/ndcg_10' in events.Tags()['scalars']
  assert any(t.startswith('attention/') for t in events.Tags()['images'])


def test_eval_metrics_equal_a_numpy_ranking(runs):
  """The jitted eval path against ranks computed here from the raw scores."""
  config, workdir, _, results = runs['mha_movies']
  task, params, _ = train_lib.restore(config, workdir)
  split = task.data.test
  batch = split.collate(np.arange(len(split)), int(split.lengths.max()))
  scores, _ = task._score_next({'params': params}, batch['inputs'],  # pylint: disable=protected-access
                               batch['length'], batch['user'])
  scores = np.asarray(scores)
  ndcg, hit = [], []
  pop_ndcg = []
  popularity = task.data.popularity.astype(np.float64)
  for i in range(len(split)):
    target, seen = split.targets[i], set(split.histories[i].tolist())
    ranked = [m for m in range(1, task.num_items + 1)
              if m not in seen or m == target]
    rank = sum(scores[i, m] > scores[i, target] for m in ranked)
    ndcg.append(ranking.ndcg_at_rank(rank, 10))
    hit.append(rank < 10)
    # Popularity: average over the orders of the items tied with the target.
    above = sum(popularity[m] > popularity[target] for m in ranked)
    level = sum(popularity[m] == popularity[target] for m in ranked)
    pop_ndcg.append(np.mean([ranking.ndcg_at_rank(above + j, 10)
                             for j in range(level)]))
  assert results['full/ndcg@10'] == pytest.approx(np.mean(ndcg), abs=1e-5)
  assert results['full/hr@10'] == pytest.approx(np.mean(hit), abs=1e-5)
  assert results['popularity/full/ndcg@10'] == pytest.approx(
      np.mean(pop_ndcg), abs=1e-5)


def test_leave_one_out_inputs_never_contain_the_held_out_movie(task):
  data = task.data
  held_out = {u: set(s[-2:].tolist()) for u, s in
              zip(range(1, data.num_users + 1), data.sequences)}
  train_iter = task.train_batches()
  for _ in range(12):  # several epochs of the smoke data
    batch = next(train_iter)
    for row in range(len(batch['user'])):
      seen = set(batch['inputs'][row].tolist()) | set(
          batch['targets'][row].tolist())
      assert not seen & held_out[int(batch['user'][row])]
  for name, later in (('validation', 2), ('test', 1)):
    split = task.split(name)
    for batch in task.eval_batches(name):
      for row, example in enumerate(batch['example']):
        if example < 0:
          continue
        user = int(batch['user'][row])
        future = set(data.sequences[user - 1][-later:].tolist())
        assert int(batch['target'][row]) in future
        assert not set(batch['inputs'][row].tolist()) & future
        # Full ranking excludes exactly the history, never the target.
        seen = np.flatnonzero(batch['seen'][row])
        assert set(seen.tolist()) == set(split.histories[example].tolist()) | {
            0}
        assert not batch['seen'][row, batch['target'][row]]


def test_plots_show_the_most_recent_movies(task, tmp_path):
  """A history longer than eval.max_plot_len is plotted as its last movies."""
  params = task.init_params(jax.random.key(0))
  split = task.data.validation
  window = 3
  assert split.lengths[0] > window  # smoke histories hold >= 4 movies
  task.eval_config.max_plot_len = window
  try:
    images = task._plot_attention(params, split, str(tmp_path))
  finally:
    task.eval_config.max_plot_len = 30
  assert images and all(image.ndim == 3 for image in images.values())
  n = int(split.lengths[0])
  batch = split.collate(np.arange(1), int(split.lengths.max()))
  _, aux = task._score_next({'params': params}, batch['inputs'],
                            batch['length'], batch['user'])
  full = np.asarray(aux['self_attention'])[0, 0].mean(axis=0)
  user = int(batch['user'][0])
  plotted = np.load(tmp_path / f'user{user}_layer0.npy')
  np.testing.assert_allclose(plotted, full[n - window:n, n - window:n],
                             rtol=1e-6)


@pytest.mark.parametrize('strategy', ['uniform', 'popularity'])
def test_sampled_negatives_are_fixed_and_never_a_positive(task, strategy):
  data = task.data
  for name in ('validation', 'test'):
    split = task.split(name)
    negatives = task.negatives(name, strategy)
    assert negatives.shape == (len(split), 100)
    for i, user in enumerate(split.users):
      positives = set(data.sequences[user - 1].tolist())  # target included
      assert split.targets[i] in positives
      assert not set(negatives[i].tolist()) & positives
      assert len(set(negatives[i].tolist())) == 100 and negatives[i].min() > 0
    again = movie_data.sample_negatives(
        data, split, 100, strategy=strategy,
        seed=int(task.eval_config.negatives_seed))
    np.testing.assert_array_equal(negatives, again)
  batch = next(task.eval_batches('test'))
  real = batch['example'] >= 0
  np.testing.assert_array_equal(
      batch[f'negatives_{strategy}'][real],
      task.negatives('test', strategy)[batch['example'][real]])


def test_training_negatives_are_deterministic_and_skip_the_users_movies():
  inputs = jnp.array([[1, 2, 3, 0], [4, 5, 0, 0]])
  targets = jnp.array([[2, 3, 6, 0], [5, 7, 0, 0]])
  rng = jax.random.key(3)
  negatives = np.asarray(movies_task.sample_training_negatives(
      rng, inputs, targets, 50, num_items=8))
  again = movies_task.sample_training_negatives(rng, inputs, targets, 50, 8)
  np.testing.assert_array_equal(negatives, again)
  for row, own in enumerate([{1, 2, 3, 6}, {4, 5, 7}]):
    drawn = set(negatives[row].ravel().tolist())
    assert not drawn & own
    assert drawn - {0} <= set(range(1, 9)) - own
    assert 0 in drawn  # the user's own movies were drawn and dropped


def test_full_softmax_with_target_attention_is_a_clear_error(tmp_path):
  """(Names and ranges: tests/test_training_config_check.py.)"""
  config = bahdanau_movies.get_config('smoke')
  config.loss = 'softmax'
  with pytest.raises(ValueError, match=r"full softmax .* use config.loss="
                     r"'bce' or 'sampled_softmax'"):
    train_lib.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize('name', ['mha_movies', 'mf_movies'])
def test_shared_negatives_score_as_the_same_draw_per_position(name):
  """config.share_negatives: one draw per row, scored by broadcasting,
  gives the loss of that draw repeated at every position."""
  config = CONFIGS[name].get_config('smoke')
  config.loss, config.num_negatives = 'sampled_softmax', 6
  config.share_negatives = True
  task = movies_task.Task(config, '/nonexistent')
  params = task.init_params(jax.random.key(0))
  batch = next(task.train_batches())
  rng = jax.random.key(5)
  loss, _ = task.loss_fn(params, batch, rng, train=False)
  negatives = movies_task.sample_training_negatives(
      jax.random.split(rng)[0], batch['inputs'], batch['targets'], 6,
      task.num_items, per_row=True)
  assert negatives.shape == (batch['inputs'].shape[0], 1, 6)
  negatives = jnp.broadcast_to(negatives, batch['inputs'].shape + (6,))
  scores, _ = task.model.apply(
      {'params': params}, batch['inputs'], batch['user'],
      jnp.concatenate([batch['targets'][..., None],
                       jnp.maximum(negatives, 0)], axis=-1))
  logits = jnp.where(jnp.concatenate(
      [jnp.ones_like(negatives[..., :1], bool), negatives > 0], -1),
                     scores, -1e9)
  want = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
  mask = batch['mask']
  assert float(loss) == pytest.approx(
      float((want * mask).sum() / mask.sum()), rel=1e-5)


def test_shared_negatives_need_a_model_that_shares_states():
  config = bahdanau_movies.get_config('smoke')
  config.share_negatives = True
  with pytest.raises(ValueError, match='share_negatives needs a model'):
    movies_task.Task(config, '/nonexistent')
