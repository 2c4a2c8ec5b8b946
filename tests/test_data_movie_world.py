"""The synthetic movie world: determinism, oracle, history matters."""

import hashlib
import pickle

import numpy as np
import pytest

from attention.data import movie_world
from attention.data import movies

SMALL = dict(num_users=300, num_items=120, min_seq_len=8, max_seq_len=30)


def _digest(world) -> str:
  return hashlib.sha256(pickle.dumps(
      (world.features, world.titles, [s.tolist() for s in world.sequences],
       world.oracle_test, world.oracle_validation))).hexdigest()


@pytest.fixture(scope='module')
def world():
  return movie_world.generate(seed=0, **SMALL)


def test_same_seed_same_world(world):
  assert _digest(world) == _digest(movie_world.generate(seed=0, **SMALL))
  assert _digest(world) != _digest(movie_world.generate(seed=1, **SMALL))


def test_world_shapes_and_titles(world):
  m = SMALL['num_items']
  assert world.features.shape == (m + 1, len(movie_world.GENRES)) and (
      world.features[1:] >= 0).all()
  assert len(movie_world.GENRES) >= 8
  assert len(set(world.titles)) == m + 1  # Unique titles.
  assert (world.predecessor > 0).any()  # Some sequels exist.
  for seq in world.sequences:
    assert SMALL['min_seq_len'] <= len(seq) <= SMALL['max_seq_len']
    assert len(set(seq.tolist())) == len(seq)  # Nobody re-watches.
    assert seq.min() >= 1 and seq.max() <= m


def test_oracle_is_a_distribution_over_unwatched_movies(world):
  for oracle, cut in ((world.oracle_test, 1), (world.oracle_validation, 2)):
    np.testing.assert_allclose(oracle.sum(axis=1), 1.0, atol=1e-5)
    assert (oracle[:, 0] == 0).all()
    for u, seq in enumerate(world.sequences):
      history = seq[:-cut]
      assert (oracle[u, history] == 0).all()
      assert oracle[u, seq[-cut]] > 0  # The drawn movie was possible.


def test_history_beats_no_history(world):
  targets = np.array([s[-1] for s in world.sequences])
  oracle = movie_world.oracle_metrics(world.oracle_test, targets)
  static = movie_world.oracle_metrics(world.no_history_test, targets)
  assert 0 < oracle['expected_ndcg@10'] <= oracle['expected_hr@10'] <= 1
  assert oracle['hr@10'] > static['hr@10'] + 0.1
  assert oracle['ndcg@10'] > static['ndcg@10'] + 0.05


def test_load_movies_toy_carries_the_oracle():
  config = {'source': 'toy', 'num_users': 40, 'num_items': 50,
            'min_seq_len': 5, 'max_seq_len': 12, 'max_len': 6}
  data = movies.load_movies(config)
  assert data.num_items == 50 and data.num_users == 40
  assert len(data.titles) == 51 and data.world is not None
  batch = data.test.collate(np.array([3, -1]), 6)
  assert batch['oracle'].shape == (2, 51)
  np.testing.assert_array_equal(batch['oracle'][0], data.world.oracle_test[3])
  assert batch['oracle'][0, batch['target'][0]] > 0
  assert not batch['oracle'][1].any()
  # Validation's oracle is the distribution of the second-to-last item.
  np.testing.assert_array_equal(data.validation.oracle,
                                data.world.oracle_validation)


def test_bad_world_sizes():
  with pytest.raises(ValueError, match='min_seq_len <= max_seq_len'):
    movie_world.generate(num_users=5, num_items=10, min_seq_len=5,
                         max_seq_len=20)
  with pytest.raises(ValueError, match='min_seq_len must be >= 3'):
    movie_world.generate(num_users=5, num_items=10, min_seq_len=2,
                         max_seq_len=5)
