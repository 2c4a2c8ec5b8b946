"""Ranking metrics for recommendation: HR@K and NDCG@K (jax.numpy; no Flax).

One held-out item per example (leave-one-out), so a ranking is summed up by
the target's rank r (0 = top): HR@K = [r < K] and NDCG@K = [r < K] / log2(r + 2)
(the ideal DCG of a single relevant item is 1).

Ties are split fairly: with g candidates scoring strictly above the target
and t others scoring the same, the target's rank is taken as uniform over
g, ..., g + t, and HR and NDCG are their expectations over that draw. A
constant scorer therefore gets the metrics of a random ranking, not those of
a perfect one (as "count only the strictly better" would give) nor of the
worst one.

The same functions serve every protocol:
  full ranking    candidates = all items; the user's seen items (and the
                  padding id 0) excluded, the target never excluded;
  sampled         candidates = [target] + N sampled negatives (none of them
                  a positive), nothing excluded.

Shapes use the package's axis legend (see attention/__init__.py): B counts
examples, C the candidates of a ranking.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def rank_counts(scores_BC: Array, target_B: Array,
                exclude_BC: Array | None = None) -> tuple[Array, Array]:
  """How many candidates score above, and level with, each target.

  Args:
    scores_BC: float [B, C] candidate scores (higher = ranked first).
    target_B: int [B] the target's column in ``scores_BC``.
    exclude_BC: optional bool [B, C], True = not ranked (seen items, padding).
      The target's own column is never excluded.

  Returns:
    ``(greater_B, ties_B)`` int32: candidates (target excluded) scoring
    strictly above the target, and those scoring exactly the same.
  """
  scores_BC = jnp.asarray(scores_BC)
  target_B = jnp.asarray(target_B)
  if scores_BC.ndim != 2 or target_B.shape != scores_BC.shape[:1]:
    raise ValueError('rank_counts: expected scores [B, C] and target [B]; got '
                     f'{scores_BC.shape} and {target_B.shape}.')
  if exclude_BC is not None and exclude_BC.shape != scores_BC.shape:
    raise ValueError(f'rank_counts: exclude must be [B, C] = {scores_BC.shape},'
                     f' got {exclude_BC.shape}.')
  column_1C = jnp.arange(scores_BC.shape[1])[None, :]
  is_target_BC = column_1C == target_B[:, None]
  target_score_B1 = jnp.take_along_axis(scores_BC, target_B[:, None], axis=1)
  ranked_BC = ~is_target_BC
  if exclude_BC is not None:
    ranked_BC = ranked_BC & ~exclude_BC
  greater_B = jnp.sum(ranked_BC & (scores_BC > target_score_B1), axis=1)
  ties_B = jnp.sum(ranked_BC & (scores_BC == target_score_B1), axis=1)
  return greater_B.astype(jnp.int32), ties_B.astype(jnp.int32)


def hit_rate(greater_B: Array, ties_B: Array, k: int) -> Array:
  """Expected HR@k [B]: P(rank < k), rank uniform on greater..greater+ties."""
  _check_k(k)
  greater_B = jnp.asarray(greater_B, jnp.float32)
  ties_B = jnp.asarray(ties_B, jnp.float32)
  return jnp.clip(k - greater_B, 0.0, ties_B + 1.0) / (ties_B + 1.0)


def ndcg(greater_B: Array, ties_B: Array, k: int) -> Array:
  """Expected NDCG@k [B] (one relevant item; ties split as in hit_rate)."""
  _check_k(k)
  greater_B1 = jnp.asarray(greater_B, jnp.float32)[:, None]
  ties_B1 = jnp.asarray(ties_B, jnp.float32)[:, None]
  rank_1K = jnp.arange(k, dtype=jnp.float32)[None, :]
  possible_BK = (rank_1K >= greater_B1) & (rank_1K <= greater_B1 + ties_B1)
  gain_1K = 1.0 / jnp.log2(rank_1K + 2.0)
  return jnp.sum(jnp.where(possible_BK, gain_1K, 0.0), axis=1) / (
      ties_B1[:, 0] + 1.0)


def ndcg_at_rank(rank: int, k: int) -> float:
  """NDCG@k of a target at 0-based ``rank`` with no ties: the reference."""
  _check_k(k)
  return float(1.0 / np.log2(rank + 2.0)) if rank < k else 0.0


def metric_sums(greater_B: Array, ties_B: Array, weight_B: Array,
                ks: Sequence[int] = (1, 5, 10),
                prefix: str = '') -> dict[str, tuple[Array, Array]]:
  """``{prefix + 'hr@k' | 'ndcg@k': (weighted sum, weight total)}``.

  The (sum, count) pairs add up over batches and devices; ``weight_B`` is 1
  on real examples and 0 on padding rows.
  """
  weight_B = jnp.asarray(weight_B, jnp.float32)
  total = weight_B.sum()
  out = {}
  for k in ks:
    out[f'{prefix}hr@{k}'] = ((hit_rate(greater_B, ties_B, k) * weight_B).sum(),
                              total)
    out[f'{prefix}ndcg@{k}'] = ((ndcg(greater_B, ties_B, k) * weight_B).sum(),
                                total)
  return out


def seen_mask(histories: Sequence[np.ndarray], rows: np.ndarray,
              num_items: int) -> np.ndarray:
  """bool [B, num_items + 1]: True at the items of each row's history.

  Column 0 (padding) is always True, so it is never ranked; padding rows
  (``rows < 0``) exclude only column 0.

  Args:
    histories: per example, the (untruncated) items seen before the target.
    rows: int [B] example indices, -1 = padding row.
    num_items: M.
  """
  rows = np.asarray(rows)
  mask = np.zeros((len(rows), num_items + 1), bool)
  for r, i in enumerate(rows.tolist()):
    if i >= 0:
      mask[r, np.asarray(histories[i], np.int64)] = True
  mask[:, 0] = True
  return mask


def _check_k(k):
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f'The cut-off K must be a positive int, got {k!r}.')
