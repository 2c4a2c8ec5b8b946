"""Movie recommendation: data, losses, ranking evaluation and attention plots.

Training reads each user's training sequence and predicts the next movie at
every position (``targets``), with one of three losses (``config.loss``):

  'softmax'          cross-entropy over all movies (not for target_attention,
                     which would need an attention per movie and position);
  'bce'              binary cross-entropy of the true next movie against
                     ``config.num_negatives`` sampled ones (SASRec's loss);
  'sampled_softmax'  cross-entropy over the true movie and the sampled ones.

Negatives are drawn uniformly inside the jitted loss from the train step's
rng (``config.seed`` and the step fix them); a draw that is one of the
user's training movies carries no loss. They are drawn per position, or,
with ``config.share_negatives``, once per user row and shared by its
positions: the same estimator with correlated draws, and far cheaper, since
the per-position draw gathers a [B, L, N, D] tensor of embeddings (at
:movielens' shape, B 64, L 200, N 128, D 64: 420 MB per step, 0.9 s and
200,000 page faults for the scores' forward and backward, against 24 ms).

Evaluation ranks each user's held-out movie (leave-one-out: the
second-to-last for validation, the last for test) after the whole history:

  full/             among all movies, the user's already-seen movies
                    (the whole history before the target) excluded;
  sampled_uniform100/, sampled_pop100/
                    among the target and 100 negatives sampled uniformly
                    (SASRec's protocol) or by training popularity
                    (BERT4Rec's), fixed by ``config.eval.negatives_seed``;
                    never the target, nor a movie of the user's sequence
                    (``config.eval.negatives_exclude='sequence'``) or of
                    the history before the target ('history', SASRec's
                    evaluation code). For
                    comparison with the literature only: sampled metrics
                    overstate quality and can reorder models.

``config.eval.max_users`` > 0 evaluates a fixed sample of that many users
when there are more (SASRec evaluates 10,000 on large files). Each metric
comes with HR@K and NDCG@K for K in ``config.eval.ks`` (ties split fairly, see
attention.tasks.ranking), the validation/test ``loss`` (cross-entropy of the
target over all movies), the same metrics of a popularity ranking
(``popularity/<protocol>/...``), and on the synthetic world the ranking by
the true next-movie distribution (``oracle/...``; ``oracle/expected_ndcg@10``
averages over targets drawn from it) and ``share_of_oracle/ndcg@10``.

Attention a model exposes for plots (its ``aux``; see attention.models.mf
for the model interface):
  sasrec            ``self_attention`` [num_layers, B, N, L, L]: history x
                    history, plotted per layer (head average);
  target_attention  ``target_attention`` [B, C, L]: candidates x history,
                    for the target and the model's top recommendations;
  mf                nothing.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attention import models
from attention.data import movie_world
from attention.data import movies
from attention.data import pipeline
from attention.tasks import plotting
from attention.tasks import ranking

LOSSES = ('softmax', 'bce', 'sampled_softmax')
# Models that score one set of candidates against every position's state.
SHARED_NEGATIVES = ('sasrec', 'mf')
_NEG = -1e9  # Logit of movies that must not win (the padding id 0).


class Task:
  """The movie task (see attention.tasks for the interface)."""

  train_keys = ('inputs', 'targets', 'mask', 'user')

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    if config.loss not in LOSSES:
      raise ValueError(f'Unknown config.loss {config.loss!r}; valid losses: '
                       f'{list(LOSSES)}.')
    self.share_negatives = bool(config.get('share_negatives', False))
    if self.share_negatives and config.model.name not in SHARED_NEGATIVES:
      raise ValueError(
          f'config.share_negatives needs a model whose states do not depend '
          f'on the candidate ({list(SHARED_NEGATIVES)}); '
          f'{config.model.name!r} attends per candidate: set it to False.')
    if config.loss != 'softmax' and int(config.num_negatives) < 1:
      raise ValueError(f'config.loss={config.loss!r} needs '
                       f'config.num_negatives >= 1, got '
                       f'{config.num_negatives}.')
    self.eval_config = config.eval
    self.ks = tuple(int(k) for k in self.eval_config.ks)
    num_negatives = int(self.eval_config.num_negatives)
    self.protocols = {'full': None,
                      f'sampled_uniform{num_negatives}': 'uniform',
                      f'sampled_pop{num_negatives}': 'popularity'}
    self.negatives_exclude = str(self.eval_config.get('negatives_exclude',
                                                      'sequence'))
    if self.negatives_exclude not in movies.NEGATIVES_EXCLUDE:
      raise ValueError(
          f'Unknown config.eval.negatives_exclude {self.negatives_exclude!r}; '
          f'valid: {list(movies.NEGATIVES_EXCLUDE)}.')
    max_users = int(self.eval_config.get('max_users', 0))
    if max_users < 0:
      raise ValueError('config.eval.max_users must be >= 0 (0 = every user), '
                       f'got {max_users}.')
    self.data = movies.load_movies(config.data)
    if max_users and len(self.data.validation) > max_users:
      # SASRec's evaluation of large files: a sample of users, here the same
      # users for validation and test at every evaluation.
      rows = np.sort(np.random.default_rng(
          int(self.eval_config.negatives_seed)).choice(
              len(self.data.validation), max_users, replace=False))
      self.data.validation = self.data.validation.select(rows)
      self.data.test = self.data.test.select(rows)
    self.num_items = self.data.num_items
    self.max_len = self.data.train.max_len
    self.model = models.build(config.model, num_items=self.num_items,
                              num_users=self.data.num_users,
                              max_len=self.max_len,
                              dtype=jnp.dtype(config.dtype))
    self._negatives: dict[tuple[str, str], np.ndarray] = {}
    self._oracle: dict[str, dict[str, float]] = {}

  # --- training ---------------------------------------------------------

  def init_params(self, rng):
    length = min(4, self.max_len)
    inputs = jnp.ones((1, length), jnp.int32)
    candidates = jnp.ones((1, length, 2), jnp.int32)
    return self.model.init(rng, inputs, jnp.ones((1,), jnp.int32),
                           candidates)['params']

  def train_batches(self):
    return pipeline.train_iterator(self.data.train, self.config)

  def loss_fn(self, params, batch, rng, train: bool):
    """Next-movie loss at every real position -> (loss, metrics)."""
    rng = jax.random.key(0) if rng is None else rng
    negatives_rng, dropout_rng = jax.random.split(rng)
    inputs_BL, targets_BL = batch['inputs'], batch['targets']
    apply = functools.partial(
        self.model.apply, {'params': params}, inputs_BL, batch['user'],
        deterministic=not train,
        rngs={'dropout': dropout_rng} if train else None)
    if self.config.loss == 'softmax':
      # [B, L, V], or [B, 1, V] from a model that ignores the history.
      logits_BLV, _ = apply(None)
      logits_BLV = logits_BLV.at[..., 0].set(_NEG)
      if self.config.loss_excludes_seen:
        logits_BLV = jnp.where(
            watched_before(inputs_BL, targets_BL, self.num_items),
            _NEG, logits_BLV)
      log_probs_BLV = jax.nn.log_softmax(logits_BLV, axis=-1)
      loss_BL = -jnp.take_along_axis(log_probs_BLV, targets_BL[..., None],
                                     axis=-1)[..., 0]
    else:
      positive_BL, negative_BLN, valid_BLN = self._sampled_scores(
          apply, negatives_rng, inputs_BL, targets_BL)
      if self.config.loss == 'bce':
        loss_BL = -jax.nn.log_sigmoid(positive_BL) - jnp.sum(
            jnp.where(valid_BLN, jax.nn.log_sigmoid(-negative_BLN), 0.0),
            axis=-1)
      else:
        negative_BLN = jnp.broadcast_to(
            jnp.where(valid_BLN, negative_BLN, _NEG),
            positive_BL.shape + negative_BLN.shape[-1:])
        logits_BLC = jnp.concatenate(
            [positive_BL[..., None], negative_BLN], axis=-1)
        loss_BL = optax.softmax_cross_entropy_with_integer_labels(
            logits_BLC, jnp.zeros_like(targets_BL))
    mask_BL = batch['mask'].astype(jnp.float32)
    count = mask_BL.sum()
    loss_sum = (loss_BL * mask_BL).sum()
    return loss_sum / jnp.maximum(count, 1.0), {'loss': (loss_sum, count)}

  def _sampled_scores(self, apply, rng, inputs_BL, targets_BL):
    """Scores of the targets [B, L] and of sampled negatives [B, L or 1, N],
    and which negatives count [B, L or 1, N] (a draw of the user's own
    movies does not)."""
    negatives_BLN = sample_training_negatives(
        rng, inputs_BL, targets_BL, int(self.config.num_negatives),
        self.num_items, per_row=self.share_negatives)
    valid_BLN = negatives_BLN > 0
    negatives_BLN = jnp.maximum(negatives_BLN, 0)
    if self.share_negatives:
      # One [B, 1, N] draw per user row, scored against every position's
      # state by broadcasting: no [B, L, N, D] gather of embeddings.
      (positive_BL1, negative_BLN), _ = apply(
          (targets_BL[..., None], negatives_BLN))
      return positive_BL1[..., 0], negative_BLN, valid_BLN
    scores_BLC, _ = apply(jnp.concatenate(
        [targets_BL[..., None], negatives_BLN], axis=-1))
    return scores_BLC[..., 0], scores_BLC[..., 1:], valid_BLN

  # --- evaluation ---------------------------------------------------------

  def split(self, name: str) -> movies.MovieSplit:
    splits = {'validation': self.data.validation, 'test': self.data.test}
    if name not in splits:
      raise ValueError(f'Unknown split {name!r}; valid: {sorted(splits)}.')
    return splits[name]

  @functools.cached_property
  def _score_next(self):
    return jax.jit(functools.partial(self.model.apply,
                                     method=self.model.score_next))

  def eval_step(self, params, batch):
    """Ranking metrics of the model and the baselines on one batch.

    The model under every protocol, its loss, a popularity ranking under
    every protocol (``popularity/...``) and, on the synthetic world, the
    ranking by the true next-movie distribution (``oracle/...``).
    """
    scores_BV, _ = self.model.apply(
        {'params': params}, batch['inputs'], batch['length'], batch['user'],
        method=self.model.score_next)
    metrics = self._rank_metrics(scores_BV, batch, self.protocols)
    real_B = (batch['example'] >= 0).astype(jnp.float32)
    logits_BV = scores_BV.at[:, 0].set(_NEG)
    if self.config.loss_excludes_seen:
      not_target_BV = (jnp.arange(logits_BV.shape[1])[None, :]
                       != batch['target'][:, None])
      logits_BV = jnp.where(batch['seen'] & not_target_BV, _NEG, logits_BV)
    loss_B = optax.softmax_cross_entropy_with_integer_labels(
        logits_BV, batch['target'])
    metrics['loss'] = ((loss_B * real_B).sum(), real_B.sum())
    popularity_V = jnp.asarray(self.data.popularity, jnp.float32)
    popularity_BV = jnp.broadcast_to(
        popularity_V[None, :], (batch['target'].shape[0],
                                popularity_V.shape[0]))
    metrics.update(self._rank_metrics(popularity_BV, batch, self.protocols,
                                      prefix='popularity/'))
    if 'oracle' in batch:
      metrics.update(self._rank_metrics(batch['oracle'], batch,
                                        {'full': None}, prefix='oracle/',
                                        name_protocol=False))
    return metrics

  def _rank_metrics(self, scores_BV, batch, protocols, prefix='',
                    name_protocol=True):
    """{prefix<protocol>/hr@K, ndcg@K: (sum, count)} of scores [B, V]."""
    real_B = batch['example'] >= 0
    target_B = batch['target']
    out = {}
    for protocol, strategy in protocols.items():
      name = f'{prefix}{protocol}/' if name_protocol else prefix
      if strategy is None:
        greater, ties = ranking.rank_counts(scores_BV, target_B, batch['seen'])
      else:
        candidates_BC = jnp.concatenate(
            [target_B[:, None], batch[f'negatives_{strategy}']], axis=1)
        greater, ties = ranking.rank_counts(
            jnp.take_along_axis(scores_BV, candidates_BC, axis=1),
            jnp.zeros_like(target_B))
      out.update(ranking.metric_sums(greater, ties, real_B, self.ks, name))
    return out

  def negatives(self, split: str, strategy: str) -> np.ndarray:
    """int32 [N, num_negatives]: the fixed sampled-protocol negatives."""
    key = (split, strategy)
    if key not in self._negatives:
      self._negatives[key] = movies.sample_negatives(
          self.data, self.split(split), int(self.eval_config.num_negatives),
          strategy=strategy, seed=int(self.eval_config.negatives_seed),
          exclude=self.negatives_exclude)
    return self._negatives[key]

  def num_examples(self, split: str) -> int:
    return len(self.split(split))

  def eval_batches(self, split: str):
    """Host batches of ``split`` with 'seen' and the sampled negatives."""
    examples = self.split(split)
    # One shape (the split's longest history, at most max_len): a pass over
    # the split is a fraction of a second, one compilation per bucket shape
    # seconds each.
    for batch in pipeline.eval_iterator(examples, self.config,
                                        bucketing=False):
      rows = batch['example']
      batch['seen'] = ranking.seen_mask(examples.histories, rows,
                                        self.num_items)
      for strategy in ('uniform', 'popularity'):
        negatives = self.negatives(split, strategy)
        batch[f'negatives_{strategy}'] = np.where(
            rows[:, None] >= 0, negatives[np.maximum(rows, 0)], 0).astype(
                np.int32)
      yield batch

  def _expected_oracle(self, split: str) -> dict[str, float]:
    """The oracle's expected metrics over targets drawn from it; cached."""
    if split not in self._oracle:
      examples = self.split(split)
      self._oracle[split] = {}
      if examples.oracle is not None:
        expected = movie_world.oracle_metrics(examples.oracle,
                                              examples.targets, k=10)
        self._oracle[split] = {
            'oracle/expected_ndcg@10': expected['expected_ndcg@10'],
            'oracle/expected_hr@10': expected['expected_hr@10']}
    return self._oracle[split]

  def summarize(self, split: str, means: dict[str, float]) -> dict[str, float]:
    """Model, baseline and share-of-oracle metrics, the headline first."""
    baselines = {k: v for k, v in means.items()
                 if k.startswith(('popularity/', 'oracle/'))}
    baselines.update(self._expected_oracle(split))
    model = {k: v for k, v in means.items() if k not in baselines}
    first = [k for k in ('full/ndcg@10', 'full/hr@10') if k in model]
    out = {k: model[k] for k in first}
    if 'oracle/ndcg@10' in baselines and 'full/ndcg@10' in model:
      out['share_of_oracle/ndcg@10'] = (
          model['full/ndcg@10'] / max(baselines['oracle/ndcg@10'], 1e-9))
    out.update({k: v for k, v in model.items() if k not in out})
    out.update(baselines)
    return out

  def plots(self, params, split: str, directory: str):
    return self._plot_attention(params, self.split(split), directory)

  def predictors(self):
    return {}  # Evaluation ranks; nothing is generated.

  def test(self, params, means, predictions, directory: str) -> dict[str, Any]:
    """Every documented metric on the test split; attention plots."""
    del predictions
    results = self.summarize('test', means)
    self.plots(params, 'test', directory)
    return results

  # --- attention plots ------------------------------------------------------

  def _plot_attention(self, params, split, directory) -> dict[str, np.ndarray]:
    """Attention of the first users of ``split``: PNG + .npy, TB images.

    Candidates (target attention) are the held-out movie (marked '*') and
    the model's top recommendations among the unseen movies.
    """
    num = int(self.eval_config.num_attention_examples)
    if not num:
      return {}
    rows = np.arange(min(num, len(split)))
    # Padded to the split's longest history: one shape per split.
    batch = split.collate(rows, int(split.lengths.max()))
    args = (batch['inputs'], batch['length'], batch['user'])
    num_candidates = int(self.eval_config.num_attention_candidates)
    _, aux_shapes = jax.eval_shape(
        self._score_next, {'params': params}, *args,
        np.zeros((len(rows), num_candidates), np.int32))
    if not aux_shapes:
      return {}  # A model without attention (mf).
    scores_BV, _ = self._score_next({'params': params}, *args)
    scores_BV = np.array(scores_BV)
    scores_BV[ranking.seen_mask(split.histories, rows, self.num_items)] = (
        -np.inf)
    candidates = np.zeros((len(rows), num_candidates), np.int32)
    for r in range(len(rows)):
      target = int(batch['target'][r])
      top = [int(i) for i in np.argsort(-scores_BV[r], kind='stable')
             if i != target][:num_candidates - 1]
      candidates[r] = [target] + top
    _, aux = self._score_next({'params': params}, *args, candidates)
    aux = {k: np.asarray(v) for k, v in aux.items()}
    images = {}
    if jax.process_index() != 0 or not aux:
      return images
    os.makedirs(directory, exist_ok=True)
    titles = self.data.titles
    label = lambda i: _short_title(titles[int(i)])
    max_plot = int(self.eval_config.max_plot_len)
    for r in range(len(rows)):
      n = int(batch['length'][r])
      # The most recent movies only: a long history is unreadable as a plot
      # (the .npy keeps the window plotted; rows then sum to <= 1).
      start = max(0, n - max_plot)
      history = [label(i) for i in batch['inputs'][r, start:n]]
      window = f' (last {n - start} of {n} movies)' if start else ''
      user = int(batch['user'][r])
      plots = {}
      if 'self_attention' in aux:
        for layer, weights_NLL in enumerate(aux['self_attention'][:, r]):
          plots[f'layer{layer}'] = (
              weights_NLL.mean(axis=0)[start:n, start:n], history,
              'history (query: after movie)')
      if 'target_attention' in aux:
        cand = [('* ' if c == 0 else '') + label(i)
                for c, i in enumerate(candidates[r])]
        plots['candidates'] = (aux['target_attention'][r, :, start:n], cand,
                               'candidate (* = held-out movie)')
      for name, (matrix, y_labels, y_title) in plots.items():
        stem = f'user{user}_{name}'
        np.save(os.path.join(directory, stem + '.npy'), matrix)
        images[f'attention/{stem}'] = plotting.attention_heatmap(
            matrix, history, y_labels, x_title='history (oldest first)',
            y_title=y_title,
            title=f'{self.config.model.name} {name}, user {user}{window}',
            path=os.path.join(directory, stem + '.png'))
    return images


def watched_before(inputs_BL, targets_BL, num_items: int):
  """bool [B, L, V]: movie v was watched at or before position t.

  What full ranking excludes at evaluation, per training position; the
  target itself is never excluded (repeat watches stay predictable).
  """
  B, L = inputs_BL.shape
  position_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
  first_BV = jnp.full((B, num_items + 1), L, jnp.int32).at[
      jnp.arange(B)[:, None], inputs_BL].min(position_BL)
  seen_BLV = first_BV[:, None, :] <= position_BL[:, :, None]
  is_target_BLV = (jnp.arange(num_items + 1)[None, None, :]
                   == targets_BL[:, :, None])
  return seen_BLV & ~is_target_BLV


def sample_training_negatives(rng, inputs_BL, targets_BL, num: int,
                              num_items: int, per_row: bool = False):
  """Uniform negatives int32 [B, L, num] for every position; 0 = discarded.

  A draw that is one of the user's movies in this batch row (inputs or
  targets: the training sequence) becomes 0, and carries no loss. With
  ``per_row``, one draw [B, 1, num] per row, shared by its positions.
  """
  B, L = inputs_BL.shape
  negatives_BLN = jax.random.randint(rng, (B, 1 if per_row else L, num), 1,
                                     num_items + 1)
  L = negatives_BLN.shape[1]
  seen_BV = jnp.zeros((B, num_items + 1), bool)
  rows_B1 = jnp.arange(B)[:, None]
  seen_BV = seen_BV.at[rows_B1, inputs_BL].set(True)
  seen_BV = seen_BV.at[rows_B1, targets_BL].set(True)
  seen_BLN = jnp.take_along_axis(seen_BV, negatives_BLN.reshape(B, -1),
                                 axis=1).reshape(B, L, num)
  return jnp.where(seen_BLN, 0, negatives_BLN).astype(jnp.int32)


def _short_title(title: str, limit: int = 40) -> str:
  title = re.sub(r'\s+', ' ', str(title)).strip()
  return title if len(title) <= limit else title[:limit - 1] + '…'
