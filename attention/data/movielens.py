"""MovieLens and plain interaction files, read into per-user item sequences.

Layouts read (from the folder, a parent folder, or the official .zip):

    ml-latest-small, ml-latest, ml-20m, ml-25m   ratings.csv  (+ movies.csv)
    ml-1m                                        ratings.dat  (+ movies.dat)
    ml-100k                                      u.data       (+ u.item)

and the plain interaction files that public sequential-recommendation code
ships (e.g. SASRec's ``ml-1m.txt``): one ``user item`` pair per line,
whitespace separated, lines of one user in chronological order; further
columns are ignored.

Preprocessing (`to_sequences`): optional rating threshold; per user, sort by
time (ties and timeless files keep file order); drop users with fewer than
`min_interactions`; remap items to 1..num_items and users to 1..num_users in
increasing order of their raw ids (numeric order when the ids are numbers), so
0 is free for padding.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import warnings

import numpy as np

from attention.data import files

_RATINGS = ('ratings.csv', 'ratings.dat', 'u.data')
_MOVIES = {'ratings.csv': 'movies.csv', 'ratings.dat': 'movies.dat',
           'u.data': 'u.item'}
_LAYOUT = {'ratings.csv': 'ml-latest / ml-20m / ml-25m',
           'ratings.dat': 'ml-1m', 'u.data': 'ml-100k'}
# GroupLens ship ml-1m and ml-100k metadata in Latin-1.
_LEGACY_ENCODING = 'latin-1'


@dataclasses.dataclass
class Interactions:
  """Raw interactions, one entry per rating / line, in file order.

  Attributes:
    users: raw user ids (int64 or str array).
    items: raw item ids (int64 or str array).
    times: timestamps (None: file order is chronological).
    ratings: ratings (None when the file has none).
    titles: raw item id -> title, for the items that have one.
    skipped: malformed lines skipped.
    layout: what was read, for logs.
  """
  users: np.ndarray
  items: np.ndarray
  times: np.ndarray | None
  ratings: np.ndarray | None
  titles: dict[str, str]
  skipped: int = 0
  layout: str = ''


@dataclasses.dataclass
class Sequences:
  """Per-user chronological item sequences with remapped ids.

  Attributes:
    sequences: per user (user id u at index u - 1), int32 item ids in 1..N.
    user_ids: raw id of user u at index u - 1.
    item_ids: raw id of item i at index i; index 0 is '<pad>'.
    titles: title of item i at index i (the raw id when unknown); [0]='<pad>'.
  """
  sequences: list[np.ndarray]
  user_ids: list[str]
  item_ids: list[str]
  titles: list[str]

  @property
  def num_items(self) -> int:
    return len(self.item_ids) - 1


def _parse_rows(ref: files.FileRef, bad: files.BadLines, sep: str | None,
                encoding: str, header: str | None = None):
  """(user, item, rating, time) string columns of a ratings-like file."""
  users, items, ratings, times = [], [], [], []
  for lineno, line in files.read_lines(ref, bad, encoding=encoding):
    if header and lineno == 1 and line.startswith(header):
      continue
    cols = line.split(sep)
    if len(cols) < 4:
      bad.report(str(ref), lineno,
                 f'expected user, item, rating, timestamp; found {len(cols)} '
                 f'field(s) ({line[:60]!r})')
      continue
    try:
      rating, time = float(cols[2]), float(cols[3])
    except ValueError:
      bad.report(str(ref), lineno,
                 f'rating and timestamp must be numbers ({line[:60]!r})')
      continue
    users.append(cols[0].strip())
    items.append(cols[1].strip())
    ratings.append(rating)
    times.append(time)
  return users, items, ratings, times


def _fast_csv(ref: files.FileRef):
  """ratings.csv through NumPy's C parser; None if any line is unusual."""
  with ref.open_binary() as f:
    if not f.readline().startswith(b'userId,'):
      return None  # No header: let the line-by-line reader decide.
  try:
    with ref.open_binary() as f, warnings.catch_warnings():
      warnings.simplefilter('ignore')
      table = np.loadtxt(f, delimiter=',', skiprows=1, dtype=np.float64,
                         ndmin=2)
  except (ValueError, UnicodeDecodeError):
    return None
  if table.shape[1] != 4 or not np.all(table[:, :2] == np.round(table[:, :2])):
    return None
  ids = table[:, :2].astype(np.int64)
  return ids[:, 0], ids[:, 1], table[:, 2], table[:, 3]


def _read_titles(ref: files.FileRef, bad: files.BadLines) -> dict[str, str]:
  titles = {}
  if ref.basename == 'movies.csv':
    for lineno, line in files.read_lines(ref, bad, encoding='utf-8'):
      if lineno == 1 and line.startswith('movieId'):
        continue
      row = next(csv.reader([line]), [])
      if len(row) < 2:
        bad.report(str(ref), lineno, 'expected movieId,title,genres')
        continue
      titles[row[0].strip()] = row[1].strip()
  else:
    sep = '::' if ref.basename == 'movies.dat' else '|'
    for lineno, line in files.read_lines(ref, bad,
                                         encoding=_LEGACY_ENCODING):
      cols = line.split(sep)
      if len(cols) < 2:
        bad.report(str(ref), lineno, f'expected id{sep}title{sep}...')
        continue
      titles[cols[0].strip()] = cols[1].strip()
  return titles


def read_movielens(path: str, *, on_bad_line: str = 'error') -> Interactions:
  """Reads a MovieLens folder or .zip in one of the official layouts.

  Raises:
    FileNotFoundError: no such path, or no ratings file in it.
    ValueError: empty or malformed ratings file (with on_bad_line='error').
  """
  what = ('a MovieLens folder or .zip (ratings.csv / ratings.dat / u.data, '
          'with movies.csv / movies.dat / u.item for titles)')
  ratings_ref = files.find_file(path, _RATINGS, what)
  bad = files.BadLines(on_bad_line)
  name = ratings_ref.basename
  if ratings_ref.size() == 0:
    raise ValueError(f'{ratings_ref} is empty; expected one rating per line.')
  parsed = _fast_csv(ratings_ref) if name == 'ratings.csv' else None
  if parsed is not None:
    users, items, ratings, times = parsed  # Integer ids: less memory.
  else:
    if name == 'ratings.csv':
      cols = _parse_rows(ratings_ref, bad, ',', 'utf-8', header='userId')
    elif name == 'ratings.dat':
      cols = _parse_rows(ratings_ref, bad, '::', _LEGACY_ENCODING)
    else:
      cols = _parse_rows(ratings_ref, bad, None, _LEGACY_ENCODING)
    users, items = np.array(cols[0], dtype=str), np.array(cols[1], dtype=str)
    ratings = np.asarray(cols[2], np.float64)
    times = np.asarray(cols[3], np.float64)
  if len(users) == 0:
    raise ValueError(f'{ratings_ref} has no valid rating line '
                     f'({bad.skipped} malformed line(s) skipped).')
  titles = {}
  movies_ref = files.find_file(path, (_MOVIES[name],), what, required=False)
  if movies_ref is None:
    logging.warning('%s has no %s: titles will be the raw item ids.', path,
                    _MOVIES[name])
  else:
    titles = _read_titles(movies_ref, bad)
  bad.log_summary(path)
  return Interactions(users, items, times, ratings, titles, bad.skipped,
                      f'{_LAYOUT[name]} ({ratings_ref})')


def read_interactions(path: str, *, on_bad_line: str = 'error',
                      encoding: str = 'utf-8') -> Interactions:
  """Reads a 'user item' per-line file (chronological per user).

  Raises:
    FileNotFoundError: no such file.
    ValueError: empty file, or a line with fewer than two fields (with
      on_bad_line='error').
  """
  what = "a file of 'user item' lines"
  refs, is_container = files.list_files(path, what)
  if is_container:
    if len(refs) != 1:
      raise FileNotFoundError(
          f'config.data.path={path!r} is a folder/.zip with {len(refs)} files; '
          "point it at the one 'user item' file.")
  ref = refs[0]
  bad = files.BadLines(on_bad_line)
  users, items = [], []
  for lineno, line in files.read_lines(ref, bad, encoding=encoding):
    cols = line.split()
    if len(cols) < 2:
      bad.report(str(ref), lineno,
                 f"expected 'user item', found {len(cols)} field(s) "
                 f'({line[:60]!r})')
      continue
    users.append(cols[0])
    items.append(cols[1])
  bad.log_summary(str(ref))
  if not users:
    raise ValueError(f'{ref} has no valid \'user item\' line '
                     f'({bad.skipped} malformed line(s) skipped).')
  return Interactions(np.array(users, dtype=str), np.array(items, dtype=str),
                      None, None, {}, bad.skipped, f'interactions ({ref})')


def _sorted_ids(raw: np.ndarray) -> np.ndarray:
  """Unique raw ids in numeric order when all are integers, else lexical."""
  unique = np.unique(raw)
  try:
    return unique[np.argsort(unique.astype(np.int64), kind='stable')]
  except ValueError:
    return unique


def to_sequences(inter: Interactions, *, min_interactions: int = 5,
                 min_rating: float | None = None) -> Sequences:
  """Per-user chronological sequences, filtered and remapped.

  Args:
    inter: raw interactions.
    min_interactions: drop users with fewer interactions (at least 1; users
      with fewer than 3 train only, see attention.data.movies.leave_one_out).
    min_rating: keep only ratings >= this (None keeps all).

  Returns:
    The sequences, with items 1..N and users 1..U.
  """
  if min_interactions < 1:
    raise ValueError('config.data.min_interactions must be >= 1 (users with '
                     'fewer than 3 interactions train only), got '
                     f'{min_interactions}.')
  keep = np.ones(len(inter.users), bool)
  if min_rating is not None:
    if inter.ratings is None:
      raise ValueError(
          'config.data.min_rating is set but these interactions have no '
          'ratings.')
    keep &= inter.ratings >= min_rating
  users, items = inter.users[keep], inter.items[keep]
  order_in_file = np.flatnonzero(keep)
  times = inter.times[keep] if inter.times is not None else np.zeros(
      len(users))
  user_ids = _sorted_ids(users)
  # Sort by user (in id order), then time, then file order.
  order = np.lexsort((order_in_file, times, _rank_of(users, user_ids)))
  users, items = users[order], items[order]
  ranks = _rank_of(users, user_ids)
  starts = np.flatnonzero(np.r_[True, ranks[1:] != ranks[:-1]]) if len(
      ranks) else np.zeros(0, np.int64)
  ends = np.r_[starts[1:], len(ranks)]
  kept = [(s, e) for s, e in zip(starts, ends) if e - s >= min_interactions]
  if not kept:
    raise ValueError(
        f'No user has >= {min_interactions} interactions '
        f'(config.data.min_interactions); {len(starts)} users in the data.')
  kept_items = np.concatenate([items[s:e] for s, e in kept])
  item_ids = _sorted_ids(kept_items)
  item_code = _rank_of(items, item_ids)
  sequences = [(item_code[s:e] + 1).astype(np.int32) for s, e in kept]
  kept_users = [str(users[s]) for s, _ in kept]
  titles = ['<pad>'] + [inter.titles.get(str(i), str(i)) for i in item_ids]
  return Sequences(sequences, kept_users,
                   ['<pad>'] + [str(i) for i in item_ids], titles)


def _rank_of(values: np.ndarray, ordered_unique: np.ndarray) -> np.ndarray:
  """Position of each value in `ordered_unique` (which may not be sorted)."""
  lexical = np.argsort(ordered_unique, kind='stable')
  pos = np.searchsorted(ordered_unique[lexical], values)
  pos = np.clip(pos, 0, len(ordered_unique) - 1)
  return lexical[pos]
