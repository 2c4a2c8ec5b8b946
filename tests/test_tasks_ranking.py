"""Ranking metrics against hand-computed rankings and a brute-force reference."""

import itertools

import numpy as np
import pytest

from attention.tasks import ranking


def metrics(scores, target, exclude=None, k=10):
  scores = np.asarray(scores, np.float32)[None]
  exclude = None if exclude is None else np.asarray(exclude, bool)[None]
  greater, ties = ranking.rank_counts(scores, np.array([target]), exclude)
  return (int(greater[0]), int(ties[0]),
          float(ranking.hit_rate(greater, ties, k)[0]),
          float(ranking.ndcg(greater, ties, k)[0]))


def test_a_known_rank_gives_a_known_ndcg():
  # Target (column 1) is third: 0.9 and 0.7 score above it.
  greater, ties, hr10, ndcg10 = metrics([0.9, 0.5, 0.7, 0.1], 1)
  assert (greater, ties) == (2, 0)
  assert hr10 == 1.0
  assert ndcg10 == pytest.approx(1 / np.log2(4))  # rank 2 -> 1/log2(2+2)
  assert metrics([0.9, 0.5, 0.7, 0.1], 1, k=2)[2:] == (0.0, 0.0)
  assert metrics([0.9, 0.5, 0.7, 0.1], 1, k=3)[3] == pytest.approx(0.5)
  # Top of the list: NDCG 1 at every cut-off.
  assert metrics([0.1, 0.9, 0.2], 1, k=1)[2:] == (1.0, 1.0)
  for rank, want in [(0, 1.0), (1, 1 / np.log2(3)), (4, 1 / np.log2(6)),
                     (9, 1 / np.log2(11)), (10, 0.0)]:
    assert ranking.ndcg_at_rank(rank, 10) == pytest.approx(want)


def test_excluded_items_are_not_ranked_but_the_target_always_is():
  scores = [0.9, 0.5, 0.7, 0.1]
  assert metrics(scores, 1, exclude=[True, False, False, False])[:2] == (1, 0)
  assert metrics(scores, 1, exclude=[True, False, False, False])[3] == (
      pytest.approx(1 / np.log2(3)))
  # Excluding the target itself has no effect.
  assert metrics(scores, 1, exclude=[True, True, True, False])[:2] == (0, 0)


def test_ties_are_split_fairly():
  # Four equal scores: the target is at rank 0..3 with probability 1/4 each.
  greater, ties, hr1, ndcg10 = metrics([1.0, 1.0, 1.0, 1.0], 2, k=10)
  assert (greater, ties) == (0, 3)
  want = np.mean([1 / np.log2(r + 2) for r in range(4)])
  assert ndcg10 == pytest.approx(want)
  assert metrics([1.0] * 4, 2, k=1)[2] == pytest.approx(0.25)
  assert metrics([1.0] * 4, 2, k=3)[2] == pytest.approx(0.75)


def test_expected_metrics_equal_every_tie_break_averaged():
  """Brute force: average over all orders of the candidates tied with it."""
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 3, size=(40, 6)).astype(np.float32)
  targets = rng.integers(0, 6, size=40)
  exclude = rng.random((40, 6)) < 0.2
  greater, ties = ranking.rank_counts(scores, targets, exclude)
  for k in (1, 2, 5):
    hr = np.asarray(ranking.hit_rate(greater, ties, k))
    nd = np.asarray(ranking.ndcg(greater, ties, k))
    for b in range(40):
      t = targets[b]
      ranked = [c for c in range(6) if c == t or not exclude[b, c]]
      above = sum(scores[b, c] > scores[b, t] for c in ranked if c != t)
      level = [c for c in ranked if scores[b, c] == scores[b, t]]
      ranks = [above + order.index(t)
               for order in itertools.permutations(level)]
      assert hr[b] == pytest.approx(np.mean([r < k for r in ranks]))
      assert nd[b] == pytest.approx(
          np.mean([ranking.ndcg_at_rank(r, k) for r in ranks]))


def test_metric_sums_skip_padding_rows():
  scores = np.array([[0.0, 3.0, 1.0], [0.0, 1.0, 3.0], [9.0, 0.0, 0.0]],
                    np.float32)
  greater, ties = ranking.rank_counts(scores, np.array([1, 1, 1]))
  sums = ranking.metric_sums(greater, ties, np.array([1.0, 1.0, 0.0]),
                             ks=(1,), prefix='full/')
  assert set(sums) == {'full/hr@1', 'full/ndcg@1'}
  total, count = (float(x) for x in sums['full/hr@1'])
  assert (total, count) == (1.0, 2.0)


def test_seen_mask():
  histories = [np.array([3, 1]), np.array([2])]
  mask = ranking.seen_mask(histories, np.array([1, -1, 0]), num_items=4)
  np.testing.assert_array_equal(mask, [[1, 0, 1, 0, 0], [1, 0, 0, 0, 0],
                                       [1, 1, 0, 1, 0]])


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match=r'expected scores \[B, C\] and target '
                     r'\[B\]; got \(4,\) and \(1,\)'):
    ranking.rank_counts(np.zeros(4), np.zeros(1, int))
  with pytest.raises(ValueError, match=r'exclude must be \[B, C\]'):
    ranking.rank_counts(np.zeros((1, 4)), np.zeros(1, int),
                        np.zeros((1, 3), bool))
  with pytest.raises(ValueError, match='positive int, got 0'):
    ranking.ndcg(np.zeros(1), np.zeros(1), 0)
