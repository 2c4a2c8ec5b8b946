"""Translation metrics against hand-computed values."""

import numpy as np
import pytest

from attention.tasks import metrics


def test_aer_of_a_hand_made_alignment():
  # 3 target rows x 4 source columns; row 2 is EOS (no gold link).
  gold = np.zeros((1, 3, 4), bool)
  gold[0, 0, 1] = gold[0, 1, 2] = gold[0, 1, 3] = True
  weights = np.zeros((1, 3, 4), np.float32)
  weights[0, 0, 1] = 0.9   # hit
  weights[0, 1, 0] = 0.8   # miss
  weights[0, 2, 0] = 1.0   # EOS row: not scored
  # |A∩G| = 1, |A| = 2, |G| = 3: AER = 1 - 2·1/5 = (5 - 2) / 5.
  errors, total = metrics.alignment_error_sums(weights, gold,
                                               np.ones((1, 3), bool))
  assert (int(errors), int(total)) == (3, 5)
  errors, total = metrics.alignment_error_sums(gold.astype(np.float32), gold,
                                               np.ones((1, 3), bool))
  # Two gold links in row 1 and one argmax: precision 1, recall 2/3.
  assert int(errors) / int(total) == pytest.approx(1 - 2 * 2 / 5)


def test_attention_entropy_sums():
  weights = np.array([[[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]]], np.float32)
  mask = np.array([[True, True, False]])
  total, rows = metrics.attention_entropy_sums(weights, mask)
  assert float(rows) == 2
  assert float(total) == pytest.approx(np.log(2), rel=1e-6)


def test_sacrebleu_scores_and_exact_match():
  refs = ['the cat sat on the mat', 'a dog barked loudly today']
  assert metrics.bleu(refs, refs) == pytest.approx(100.0)
  assert metrics.chrf(refs, refs) == pytest.approx(100.0)
  assert metrics.exact_match([refs[0], 'a dog'], refs) == 0.5
  assert metrics.bleu(['x y z w', 'q r s t u'], refs) < 5.0
  with pytest.raises(ValueError, match='2 hypotheses but 1 references'):
    metrics.bleu(refs, refs[:1])


def test_length_buckets_and_by_bucket():
  names = metrics.length_buckets(np.array([3, 10, 19, 25, 60]), (0, 10, 20))
  assert names == ['0-9', '10-19', '10-19', '20+', '20+']
  hyps = ['a b', 'c d', 'x', 'e f', 'g h']
  refs = ['a b', 'c d', 'y', 'e f', 'g z']
  assert metrics.by_bucket(metrics.exact_match, hyps, refs, names) == {
      '0-9': 1.0, '10-19': 0.5, '20+': 0.5}
