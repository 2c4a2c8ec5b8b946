"""configs/mha_movies.py:sasrec_paper, SASRec's protocol, piece by piece:
recency-aligned positions, users kept, evaluation negatives, metric values,
the user sample, and a run end to end on a SASRec-format file."""

import jax.numpy as jnp
import numpy as np
import pytest

from attention.data import movies
from attention.models import sasrec
from attention.tasks import movies as movies_task
from attention.training import train_lib
from configs import mha_movies


def test_recent_positions_put_the_newest_item_last():
  """SASRec pads on the left, so the newest item always has the last
  position; 'recent' gives right-padded rows those positions."""
  inputs = jnp.array([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 0, 0, 0, 0]])
  recent = np.asarray(sasrec.position_ids(inputs, 8, 'recent'))
  np.testing.assert_array_equal(recent[0, :3], [5, 6, 7])
  np.testing.assert_array_equal(recent[1], [3, 4, 5, 6, 7])
  assert recent[2, 0] == 7
  assert recent.min() >= 0 and recent.max() <= 7  # padding: a valid row
  absolute = np.asarray(sasrec.position_ids(inputs, 8, 'absolute'))
  np.testing.assert_array_equal(absolute[0], [0, 1, 2, 3, 4])


def test_training_and_evaluation_rows_align_the_same_way():
  """The newest input of a training row and of an evaluation row (right
  padded, of any length) gets position max_len - 1."""
  sequences = [np.arange(1, 13, dtype=np.int32),
               np.array([3, 4, 5, 6], np.int32)]
  train, validation, _, _ = movies.leave_one_out(sequences, 20, max_len=6)
  for split in (train, validation):
    batch = split.collate(np.arange(len(split)), 7)
    positions = np.asarray(sasrec.position_ids(jnp.asarray(batch['inputs']),
                                               6, 'recent'))
    for row, n in enumerate(batch['length']):
      np.testing.assert_array_equal(positions[row, :n], np.arange(6 - n, 6))


def test_unknown_positions_is_a_clear_error():
  model = sasrec.Model(num_items=5, max_len=4, positions='left')
  with pytest.raises(ValueError, match=r"unknown positions='left'; valid: "
                     r"\['absolute', 'recent'\]"):
    model.init(__import__('jax').random.key(0), jnp.ones((1, 2), jnp.int32),
               jnp.ones((1,), jnp.int32))


def test_users_with_fewer_than_three_items_only_train():
  """SASRec keeps every user: fewer than 3 items train on all of them."""
  lengths = (1, 2, 3, 4, 5)
  sequences = [np.arange(1, n + 1, dtype=np.int32) + 10 * u
               for u, n in enumerate(lengths)]
  train, validation, test, popularity = movies.leave_one_out(
      sequences, 60, max_len=10)
  # Training: the 2-item user whole; the 4- and 5-item users minus 2 held
  # out; the 1-item and 3-item users have no (input, target) pair.
  assert train.users.tolist() == [2, 4, 5]
  assert [h.tolist() for h in train.histories] == [[11, 12], [31, 32],
                                                   [41, 42, 43]]
  assert validation.users.tolist() == test.users.tolist() == [3, 4, 5]
  assert validation.targets.tolist() == [22, 33, 44]
  assert test.targets.tolist() == [23, 34, 45]
  # Popularity counts what trains: all of a short user's items.
  assert popularity[1] == popularity[11] == popularity[12] == 1
  assert popularity[22] == popularity[23] == 0
  with pytest.raises(ValueError, match='No user has >= 3 interactions'):
    movies.leave_one_out(sequences[:2], 60, max_len=10)


def _data(sequences, num_items):
  train, validation, test, popularity = movies.leave_one_out(
      sequences, num_items, max_len=10)
  return movies.MovieData(
      train, validation, test, num_users=len(sequences), num_items=num_items,
      titles=[str(i) for i in range(num_items + 1)], popularity=popularity,
      sequences=sequences, item_ids=[str(i) for i in range(num_items + 1)],
      user_ids=[str(u) for u in range(1, len(sequences) + 1)], world=None,
      info={})


def test_history_negatives_exclude_the_past_but_not_the_future():
  """'history' (SASRec's evaluate): never an item before the target nor the
  target; a later item of the user may be drawn. 'sequence': never any."""
  data = _data([np.array([1, 2, 3, 4, 5], np.int32)], num_items=10)
  # Validation: history 1 2 3, target 4: exactly the 6 items 5..10 are left.
  negatives = movies.sample_negatives(data, data.validation, 6,
                                      exclude='history')
  assert sorted(negatives[0].tolist()) == [5, 6, 7, 8, 9, 10]
  negatives = movies.sample_negatives(data, data.test, 5, exclude='history')
  assert sorted(negatives[0].tolist()) == [6, 7, 8, 9, 10]
  negatives = movies.sample_negatives(data, data.validation, 5,
                                      exclude='sequence')
  assert sorted(negatives[0].tolist()) == [6, 7, 8, 9, 10]
  with pytest.raises(ValueError, match='fewer than 6 negatives are left'):
    movies.sample_negatives(data, data.validation, 6, exclude='sequence')
  with pytest.raises(ValueError, match=r"negatives_exclude must be one of "
                     r"\['sequence', 'history'\], got 'train'"):
    movies.sample_negatives(data, data.validation, 5, exclude='train')


def test_sampled_metrics_on_a_hand_built_case():
  """HR@10 and NDCG@10 of three users whose target ranks 0, 4 and 12 among
  itself and 100 negatives; the reference's rank is a double argsort."""
  num_items = 120
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(3, num_items + 1)).astype(np.float32)
  target = np.array([1, 2, 3], np.int32)
  negatives = np.stack([np.arange(10, 110)] * 3).astype(np.int32)
  for row, above in enumerate((0, 4, 12)):
    order = np.sort(scores[row, negatives[row]])[::-1]
    scores[row, target[row]] = (order[above - 1] + order[above]) / 2 if (
        above) else order[0] + 1.0
  reference_hr, reference_ndcg = [], []
  for row in range(3):
    candidates = np.concatenate([[target[row]], negatives[row]])
    rank = (-scores[row, candidates]).argsort().argsort()[0]
    reference_hr.append(float(rank < 10))
    reference_ndcg.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
  assert reference_hr == [1.0, 1.0, 0.0]
  np.testing.assert_allclose(reference_ndcg, [1.0, 1 / np.log2(6), 0.0])

  task = movies_task.Task.__new__(movies_task.Task)
  task.ks = (10,)
  batch = {'example': jnp.arange(3), 'target': jnp.asarray(target),
           'negatives_uniform': jnp.asarray(negatives)}
  sums = task._rank_metrics(jnp.asarray(scores), batch,  # pylint: disable=protected-access
                            {'sampled_uniform100': 'uniform'})
  mean = {k: float(s) / float(c) for k, (s, c) in sums.items()}
  assert mean['sampled_uniform100/hr@10'] == pytest.approx(
      np.mean(reference_hr))
  assert mean['sampled_uniform100/ndcg@10'] == pytest.approx(
      np.mean(reference_ndcg), rel=1e-6)


def _write_sasrec_file(path, num_users=40, num_items=150):
  """'user item' lines: users of 1 to 20 items, some items shared."""
  rng = np.random.default_rng(1)
  with open(path, 'w') as f:
    for user in range(1, num_users + 1):
      n = 1 + user % 20
      for item in rng.choice(np.arange(1, num_items + 1), n, replace=False):
        f.write(f'{user} {item}\n')


@pytest.fixture(scope='module')
def paper_run(tmp_path_factory):
  """The :sasrec_paper config trained 2 steps on a SASRec-format file."""
  root = tmp_path_factory.mktemp('paper')
  path = str(root / 'tiny.txt')
  _write_sasrec_file(path)
  config = mha_movies.get_config('sasrec_paper')
  config.data.path = path
  config.data.num_buckets = 1
  config.batch_size = 16               # 36 training users
  config.eval.max_users = 30
  config.eval.num_attention_examples = 0
  config.num_train_steps = 2
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.log_every_steps = 1
  workdir = str(root / 'run')
  results = train_lib.train_and_evaluate(config, workdir)  # validation
  return config, movies_task.Task(config, workdir), results


def test_the_paper_config_runs_end_to_end(paper_run):
  config, task, results = paper_run
  assert (config.loss, config.num_negatives) == ('bce', 1)
  assert config.model.positions == 'recent'
  assert task.data.num_users == 40  # min_interactions=1: every user kept
  for name in ('sampled_uniform100/hr@10', 'sampled_uniform100/ndcg@10',
               'full/hr@10', 'full/ndcg@10'):
    assert 0.0 <= results[name] <= 1.0


def test_max_users_evaluates_the_same_sample_for_validation_and_test(
    paper_run):
  _, task, _ = paper_run
  validation, test = task.split('validation'), task.split('test')
  eligible = [u for u, s in enumerate(task.data.sequences, 1) if len(s) >= 3]
  assert len(eligible) > 30 and len(validation) == len(test) == 30
  assert validation.users.tolist() == test.users.tolist()
  assert set(validation.users.tolist()) <= set(eligible)
  for row, user in enumerate(validation.users):
    sequence = task.data.sequences[user - 1]
    assert validation.targets[row] == sequence[-2]
    negatives = set(task.negatives('validation', 'uniform')[row].tolist())
    assert not negatives & set(sequence[:-1].tolist())  # history + target
