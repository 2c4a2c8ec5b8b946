"""The movie task: `load_movies(config.data)`.

Every source ends as per-user chronological item sequences s_1..s_n (item ids
1..num_items, 0 = padding), split leave-one-out:

    train       inputs s_1..s_{n-3}, targets s_2..s_{n-2} (next item at
                every position); s_{n-1} and s_n are never seen in training
    validation  history s_1..s_{n-2}, target s_{n-1}
    test        history s_1..s_{n-1}, target s_n

Users with fewer than 3 items (kept when config.data.min_interactions < 3)
only train, on their whole sequence, as in SASRec's data partition.

Histories keep the `max_len` most recent items (config.data.max_len) and are
right-padded. Batches (B batch, L padded length):

    train:  inputs  int32 [B, L]   targets int32 [B, L]   mask bool [B, L]
            length  int32 [B]      user    int32 [B]      example int32 [B]
    eval:   inputs  int32 [B, L]   mask    bool  [B, L]   length  int32 [B]
            target  int32 [B]      user    int32 [B]      example int32 [B]
            oracle  float32 [B, num_items + 1]   (toy world only: the true
                                                  distribution of `target`)

`example` indexes the split (-1 marks a padding row, whose masks are all
False); `user` is the remapped user id (1..num_users; 0 on padding rows).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from attention.data import config as data_config
from attention.data import movie_world
from attention.data import movielens
from attention.data import ragged
from attention.data import tfds_source  # Imports TFDS only when used.

_TASK = 'movies'
# What sampled-protocol negatives exclude besides the target.
NEGATIVES_EXCLUDE = ('sequence', 'history')


@dataclasses.dataclass
class MovieSplit:
  """One leave-one-out split (a batch source for `pipeline`).

  Attributes:
    kind: 'train' (next item at every position) or 'eval' (one target).
    users: int32 [N] user ids (1..num_users).
    histories: per example, int32 items: for 'train' the whole training
      sequence (inputs and targets), for 'eval' the full history before the
      target (untruncated: use it to exclude seen items from a ranking).
    targets: int32 [N] held-out items ('eval' only).
    max_len: at most this many (most recent) history items per example.
    oracle: float32 [N, num_items + 1] true target distributions (toy world,
      'eval' only), else None.
  """
  kind: str
  users: np.ndarray
  histories: list[np.ndarray]
  targets: np.ndarray | None
  max_len: int
  oracle: np.ndarray | None = None

  def __post_init__(self):
    if self.kind not in ('train', 'eval'):
      raise ValueError(f"kind must be 'train' or 'eval', got {self.kind!r}.")
    shift = 1 if self.kind == 'train' else 0
    # Stored flat once, so that collate is a few gathers per batch.
    self._histories = ragged.Ragged(self.histories, np.int32)
    self._lengths = np.minimum(self._histories.lengths - shift,
                               self.max_len).astype(np.int32)

  def __len__(self) -> int:
    return len(self.histories)

  @property
  def lengths(self) -> np.ndarray:
    """int32 [N]: number of (real) input positions of each example."""
    return self._lengths

  def select(self, rows: np.ndarray) -> 'MovieSplit':
    """The split of examples ``rows`` (int [K], in that order)."""
    rows = np.asarray(rows, np.int64)
    return MovieSplit(
        self.kind, self.users[rows], [self.histories[r] for r in rows],
        None if self.targets is None else self.targets[rows], self.max_len,
        None if self.oracle is None else self.oracle[rows])

  def collate(self, rows: np.ndarray, pad_len: int) -> dict[str, np.ndarray]:
    """Padded arrays for examples `rows` (int [B]; -1 gives an empty row)."""
    b = len(rows)
    rows = np.asarray(rows)
    real = np.flatnonzero(rows >= 0)
    length = np.zeros((b,), np.int32)
    user = np.zeros((b,), np.int32)
    length[real] = self._lengths[rows[real]]
    user[real] = self.users[rows[real]]
    mask = np.arange(pad_len, dtype=np.int32)[None, :] < length[:, None]
    # The most recent items of each history: for training, the last
    # `length` + 1 of the sequence, inputs all but the last, targets all but
    # the first; for evaluation the last `length`.
    skip = self._histories.lengths[np.maximum(rows, 0)] - length
    if self.kind == 'train':
      seq = self._histories.padded(rows, pad_len + 1, start=skip - 1,
                                   count=length + 1)
      inputs = seq[:, :-1] * mask
      targets = np.ascontiguousarray(seq[:, 1:])
    else:
      inputs = self._histories.padded(rows, pad_len, start=skip,
                                      count=length)
      target = np.zeros((b,), np.int32)
      target[real] = self.targets[rows[real]]
    batch = {'inputs': inputs, 'mask': mask,
             'length': length, 'user': user,
             'example': rows.astype(np.int32)}
    if self.kind == 'train':
      batch['targets'] = targets
    else:
      batch['target'] = target
      if self.oracle is not None:
        oracle = np.zeros((b, self.oracle.shape[1]), np.float32)
        real = rows >= 0
        oracle[real] = self.oracle[rows[real]]
        batch['oracle'] = oracle
    return batch


@dataclasses.dataclass
class MovieData:
  """Everything the movie experiments read.

  Attributes:
    train: training split (users with at least two training items).
    validation: validation split (every user with >= 3 items).
    test: test split (every user with >= 3 items).
    num_users: U; user ids are 1..U.
    num_items: M; item ids are 1..M, 0 is padding (embedding size M + 1).
    titles: M + 1 titles, titles[0] = '<pad>' (raw ids where unknown).
    popularity: int64 [M + 1] interaction counts in the training part of the
      sequences (s_1..s_{n-2}), for popularity-sampled negatives.
    sequences: per user (index u - 1), the full int32 sequence s_1..s_n.
    item_ids: raw id of each item (index 0 = '<pad>').
    user_ids: raw id of each user (index u - 1).
    world: the generated `movie_world.World` (toy source only).
    info: what was loaded, for logs.
  """
  train: MovieSplit
  validation: MovieSplit
  test: MovieSplit
  num_users: int
  num_items: int
  titles: list[str]
  popularity: np.ndarray
  sequences: list[np.ndarray]
  item_ids: list[str]
  user_ids: list[str]
  world: movie_world.World | None
  info: dict[str, Any]


def leave_one_out(sequences: list[np.ndarray], num_items: int, max_len: int,
                  oracle_validation: np.ndarray | None = None,
                  oracle_test: np.ndarray | None = None
                  ) -> tuple[MovieSplit, MovieSplit, MovieSplit, np.ndarray]:
  """Train / validation / test splits and training popularity.

  A user with n >= 3 items gives a validation example (target s_{n-1}) and
  a test example (target s_n) and trains on s_1..s_{n-2}; a user with fewer
  items only trains, on the whole sequence (as SASRec's data_partition
  does). A training sequence needs 2 items: one input, one target.

  Args:
    sequences: per user, the chronological items (at least 1 each).
    num_items: M.
    max_len: history window.
    oracle_validation: optional float [U, M+1] true validation distributions
      (every user has >= 3 items then).
    oracle_test: optional float [U, M+1] true test distributions.

  Returns:
    (train, validation, test, popularity).
  """
  if max_len < 1:
    raise ValueError(f'config.data.max_len must be >= 1, got {max_len}.')
  users = np.arange(1, len(sequences) + 1, dtype=np.int32)
  held_out = [u for u, s in enumerate(sequences) if len(s) >= 3]
  if not held_out:
    raise ValueError('No user has >= 3 interactions, so there is nothing to '
                     'evaluate on (validation and test hold out the last two '
                     'items of such users).')
  parts = [s[:-2] if len(s) >= 3 else s for s in sequences]
  train_users = [u for u, p in enumerate(parts) if len(p) >= 2]
  if not train_users:
    raise ValueError('No user has a training sequence of >= 2 items (the '
                     'last two items of a user with >= 3 are held out), so '
                     'there is nothing to train on.')
  train = MovieSplit('train', users[train_users],
                     [parts[u] for u in train_users], None, max_len)

  def held(oracle):
    return None if oracle is None else oracle[held_out]

  validation = MovieSplit(
      'eval', users[held_out], [sequences[u][:-2] for u in held_out],
      np.array([sequences[u][-2] for u in held_out], np.int32), max_len,
      held(oracle_validation))
  test = MovieSplit(
      'eval', users[held_out], [sequences[u][:-1] for u in held_out],
      np.array([sequences[u][-1] for u in held_out], np.int32), max_len,
      held(oracle_test))
  popularity = np.bincount(np.concatenate(parts),
                           minlength=num_items + 1).astype(np.int64)
  popularity[0] = 0
  return train, validation, test, popularity


def sample_negatives(data: MovieData, split: MovieSplit, num: int = 100, *,
                     strategy: str = 'uniform', seed: int = 0,
                     exclude: str = 'sequence') -> np.ndarray:
  """Negative items for sampled ranking metrics, fixed by `seed`.

  For each example, `num` distinct items drawn uniformly or in proportion to
  training popularity, none of them the target nor an item that `exclude`
  names. Rank the target among [target] + negatives.

  Args:
    data: the loaded data.
    split: `data.validation` or `data.test` (or any eval split of `data`).
    num: negatives per example.
    strategy: 'uniform' or 'popularity'.
    seed: random seed.
    exclude: 'sequence' (every item of the user's whole sequence, later
      ones included) or 'history' (the items before the target, as
      SASRec's evaluation: the training items for validation, and the
      validation item too for test).

  Returns:
    int32 [N, num].
  """
  if strategy not in ('uniform', 'popularity'):
    raise ValueError(f"strategy must be 'uniform' or 'popularity', got "
                     f'{strategy!r}.')
  if exclude not in NEGATIVES_EXCLUDE:
    raise ValueError(f'config.eval.negatives_exclude must be one of '
                     f'{list(NEGATIVES_EXCLUDE)}, got {exclude!r}.')
  if split.kind != 'eval':
    raise ValueError('sample_negatives expects an eval split (validation or '
                     'test).')
  rng = np.random.default_rng(seed)
  m = data.num_items
  if strategy == 'uniform':
    weights = np.ones(m + 1)
  else:
    weights = data.popularity.astype(np.float64) + 1e-3  # Unseen stay possible.
  weights[0] = 0.0
  out = np.zeros((len(split), num), np.int32)
  for row, user in enumerate(split.users.tolist()):
    if exclude == 'sequence':
      seen = np.unique(data.sequences[user - 1])
    else:
      seen = np.unique(np.append(split.histories[row], split.targets[row]))
    available = m - len(seen)
    if available < num:
      raise ValueError(
          f'User {user} has seen {len(seen)} of {m} items: fewer than {num} '
          'negatives are left.')
    w = weights.copy()
    w[seen] = 0.0
    out[row] = rng.choice(m + 1, size=num, replace=False, p=w / w.sum())
  return out


def _toy(c) -> MovieData:
  world = movie_world.generate(
      num_users=int(c.num_users), num_items=int(c.num_items),
      min_seq_len=int(c.min_seq_len), max_seq_len=int(c.max_seq_len),
      seed=int(c.seed))
  train, val, test, pop = leave_one_out(
      world.sequences, world.num_items, int(c.max_len),
      world.oracle_validation, world.oracle_test)
  return MovieData(
      train, val, test, num_users=len(world.sequences),
      num_items=world.num_items, titles=world.titles, popularity=pop,
      sequences=world.sequences,
      item_ids=[str(i) for i in range(world.num_items + 1)],
      user_ids=[str(u) for u in range(1, len(world.sequences) + 1)],
      world=world, info={'source': 'toy'})


def _from_interactions(inter: movielens.Interactions, c,
                       info: dict[str, Any]) -> MovieData:
  seqs = movielens.to_sequences(
      inter, min_interactions=int(c.min_interactions),
      min_rating=c.min_rating)
  train, val, test, pop = leave_one_out(seqs.sequences, seqs.num_items,
                                        int(c.max_len))
  info.update({'layout': inter.layout, 'skipped_lines': inter.skipped,
               'interactions': int(sum(len(s) for s in seqs.sequences))})
  return MovieData(
      train, val, test, num_users=len(seqs.sequences),
      num_items=seqs.num_items, titles=seqs.titles, popularity=pop,
      sequences=seqs.sequences, item_ids=seqs.item_ids,
      user_ids=seqs.user_ids, world=None, info=info)


def load_movies(config_data: Any) -> MovieData:
  """Loads the movie data that `config.data` names.

  Args:
    config_data: `config.data` (keys: attention/data/config.py); `source` is
      'toy', 'movielens', 'interactions' or 'tfds'.

  Returns:
    The leave-one-out splits, item count, titles and popularity.

  Raises:
    ValueError: unknown source or key, bad values, malformed input.
    FileNotFoundError: missing file or ratings, TFDS dataset not prepared.
  """
  c = data_config.validate(config_data, _TASK)
  source = c.source
  if source == 'toy':
    data = _toy(c)
  elif source == 'movielens':
    inter = movielens.read_movielens(c.path,
                                     on_bad_line=c.on_bad_line)
    data = _from_interactions(inter, c,
                              {'source': source, 'path': c.path})
  elif source == 'interactions':
    inter = movielens.read_interactions(c.path,
                                        on_bad_line=c.on_bad_line,
                                        encoding=c.encoding)
    data = _from_interactions(inter, c,
                              {'source': source, 'path': c.path})
  else:
    rows = tfds_source.read_ratings(c.name,
                                    data_dir=c.tfds_data_dir)
    if not rows:
      raise ValueError(f'TFDS dataset {c.name!r} has no ratings.')
    users, items, times, titles, ratings = zip(*rows)
    inter = movielens.Interactions(
        np.array(users, dtype=str), np.array(items, dtype=str),
        np.asarray(times, np.float64), np.asarray(ratings, np.float64),
        {i: t for i, t in zip(items, titles) if t is not None}, 0,
        f'tfds {c.name}')
    data = _from_interactions(inter, c,
                              {'source': source, 'name': c.name})
  data.info.update({'users': data.num_users, 'items': data.num_items,
                    'train/size': len(data.train)})
  logging.info('Movie data: %s', data.info)
  return data
