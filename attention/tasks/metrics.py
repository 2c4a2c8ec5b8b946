"""Evaluation metrics (NumPy, jax.numpy and sacreBLEU; no Flax).

Translation: corpus BLEU and chrF from sacreBLEU (the field's reference
implementation, on detokenised text), exact match, token accuracy, BLEU by
source-length bucket, alignment error rate and attention entropy.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
import sacrebleu


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """sacreBLEU corpus BLEU (13a tokenisation), 0-100."""
  _check_pairs(hypotheses, references)
  return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """sacreBLEU chrF, 0-100."""
  _check_pairs(hypotheses, references)
  return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Share of hypotheses equal to their reference (after whitespace strip)."""
  _check_pairs(hypotheses, references)
  if not hypotheses:
    return 0.0
  return float(np.mean([h.strip() == r.strip()
                        for h, r in zip(hypotheses, references)]))


def length_buckets(lengths: np.ndarray, edges: Sequence[int]) -> list[str]:
  """Bucket names like '10-19' for each length, from ascending edges.

  ``edges=(0, 10, 20)`` gives buckets '0-9', '10-19' and '20+'.
  """
  names = []
  for length in np.asarray(lengths):
    i = int(np.searchsorted(edges, length, side='right')) - 1
    i = max(i, 0)
    if i == len(edges) - 1:
      names.append(f'{edges[i]}+')
    else:
      names.append(f'{edges[i]}-{edges[i + 1] - 1}')
  return names


def by_bucket(metric, hypotheses: Sequence[str], references: Sequence[str],
              buckets: Sequence[str]) -> dict[str, float]:
  """``metric`` (e.g. :func:`bleu`) of each bucket's sentences: {bucket: value}."""
  _check_pairs(hypotheses, references)
  out = {}
  for name in sorted(set(buckets), key=_bucket_start):
    idx = [i for i, b in enumerate(buckets) if b == name]
    out[name] = metric([hypotheses[i] for i in idx],
                       [references[i] for i in idx])
  return out


def _bucket_start(name: str) -> int:
  return int(name.split('-')[0].rstrip('+'))


def alignment_error_sums(weights_BTS, gold_BTS, target_mask_BT):
  """Alignment error rate of the argmax alignment, as a (sum, count) pair.

  Each real target position t with at least one gold link is aligned to its
  argmax source position (A); G is the gold links. Target positions without
  gold links (EOS) are left out of both. With sure = possible = gold,
  AER = 1 - 2|A∩G| / (|A| + |G|) = (|A| + |G| - 2|A∩G|) / (|A| + |G|), so
  the pair (|A| + |G| - 2|A∩G|, |A| + |G|) adds up over batches like any
  other metric. Works on NumPy and (jitted) JAX arrays.

  Args:
    weights_BTS: attention weights, target x source.
    gold_BTS: bool gold links.
    target_mask_BT: bool, real target positions.

  Returns:
    int ``(errors, total)``: AER = errors / total.
  """
  scored_BT = target_mask_BT & gold_BTS.any(-1)
  argmax_BT = weights_BTS.argmax(-1)
  hit_BT = jnp.take_along_axis(gold_BTS, argmax_BT[..., None], -1)[..., 0]
  both = (hit_BT & scored_BT).sum()
  total = scored_BT.sum() + (gold_BTS & scored_BT[..., None]).sum()
  return total - 2 * both, total


def attention_entropy_sums(weights_BTS, target_mask_BT):
  """(Sum of row entropies in nats, number of rows) over real target rows."""
  logs = jnp.log(jnp.where(weights_BTS > 0, weights_BTS, 1.0))
  entropy_BT = -jnp.sum(weights_BTS * logs, -1)
  mask = target_mask_BT.astype(jnp.float32)
  return (entropy_BT * mask).sum(), mask.sum()


def _check_pairs(hypotheses, references):
  if len(hypotheses) != len(references):
    raise ValueError(f'{len(hypotheses)} hypotheses but {len(references)} '
                     'references.')
