"""TFDS datasets read through `tfds.data_source` (ArrayRecord, no TensorFlow).

Reading a prepared dataset needs only `tensorflow-datasets` and `array_record`
(both in the default install). *Preparing* a catalog dataset (downloading and
converting it) needs TensorFlow, which is an optional extra; prepare once, on a
machine with network access:

    pip install tensorflow tensorflow-datasets
    tfds build ted_hrlr_translate/pt_to_en --file_format=array_record \\
        --data_dir=~/tensorflow_datasets

and point `config.data.tfds_data_dir` at that folder (default: TFDS's own,
``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``). Nothing here downloads: an
unprepared dataset fails at once with these instructions.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import shutil
import tempfile
from typing import Any, Sequence

# Modules that register the builders this project reads. TFDS imports its
# catalog lazily, so without TensorFlow a builder is only found once its
# family module has been imported.
_FAMILIES = ('tensorflow_datasets.translate', 'tensorflow_datasets.structured')
TRANSLATION_EXAMPLES = ('ted_hrlr_translate/pt_to_en', 'wmt14_translate/de-en',
                        'wmt14_translate/fr-en', 'para_crawl/enfr')
RATINGS_EXAMPLES = ('movielens/100k-ratings', 'movielens/1m-ratings',
                    'movielens/20m-ratings', 'movielens/25m-ratings',
                    'movielens/latest-small-ratings')
_READ_CHUNK = 4096


def _own_scratch(fn):
  """Runs ``fn`` with a private temporary folder, removed afterwards.

  TFDS's DatasetInfo makes a ``tempfile.mkdtemp('tfds')`` folder for
  metadata and never removes it: one empty ``/tmp/tmp…tfds`` per dataset
  opened. Here they land in a scratch folder of our own that goes away.
  """
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with contextlib.ExitStack() as stack:
      scratch = tempfile.mkdtemp(prefix='attention-tfds-')
      stack.callback(shutil.rmtree, scratch, ignore_errors=True)
      saved = tempfile.tempdir
      tempfile.tempdir = scratch
      stack.callback(setattr, tempfile, 'tempdir', saved)
      return fn(*args, **kwargs)
  return wrapped


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "config.data.source='tfds' needs tensorflow-datasets and array_record:"
        ' pip install tensorflow-datasets array_record') from e
  for family in _FAMILIES:
    try:
      importlib.import_module(family)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('Could not import %s: %s', family, e)
  return tfds


def _prepare_hint(name: str, data_dir: str | None) -> str:
  where = data_dir or '~/tensorflow_datasets'
  return (
      f'Prepare it once on a machine with network access (TensorFlow is '
      f'needed only for this step):\n'
      f'    pip install tensorflow tensorflow-datasets\n'
      f'    tfds build {name} --file_format=array_record --data_dir={where}\n'
      f'then set config.data.tfds_data_dir={where!r} (and copy the folder '
      f'here if you prepared it elsewhere).')


@_own_scratch
def builder(name: str, data_dir: str | None = None):
  """The TFDS builder for `name`, with a clear error for an unknown name."""
  if not name:
    raise ValueError(
        "config.data.name must name a TFDS dataset for source='tfds', e.g. "
        f'{TRANSLATION_EXAMPLES[0]!r} or {RATINGS_EXAMPLES[1]!r}.')
  tfds = _tfds()
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f'Unknown TFDS dataset config.data.name={name!r}. Translation datasets '
        f'include {list(TRANSLATION_EXAMPLES)}; ratings datasets '
        f'{list(RATINGS_EXAMPLES)}. ({str(e).splitlines()[0]})') from None


@_own_scratch
def open_split(name: str, split: str, data_dir: str | None = None):
  """A random-access source (len, getitem) over one split; never downloads.

  Raises:
    FileNotFoundError: the dataset is not prepared in `data_dir` (with the
      commands that prepare it), or not in a random-access format.
    ValueError: unknown dataset or split.
  """
  tfds = _tfds()
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir,
                            download=False)
  except tfds.core.registered.DatasetNotFoundError:
    builder(name, data_dir)  # Raises the ValueError with suggestions.
    raise
  except Exception as e:  # pylint: disable=broad-except
    b = builder(name, data_dir)
    if not b.is_prepared():
      raise FileNotFoundError(
          f'TFDS dataset {name!r} is not prepared in {b.data_dir_root} and '
          f'this run does not download. {_prepare_hint(name, data_dir)}'
      ) from None
    splits = list(b.info.splits)
    if splits and split.split('[')[0] not in splits:
      raise ValueError(
          f'TFDS dataset {name!r} has no split {split!r}; it has '
          f'{splits}.') from None
    raise FileNotFoundError(
        f'TFDS dataset {name!r} in {b.data_dir} cannot be read with random '
        f'access ({type(e).__name__}: {str(e).splitlines()[0]}). It must be '
        f'prepared with --file_format=array_record. '
        f'{_prepare_hint(name, data_dir)}') from None


@_own_scratch
def split_names(name: str, data_dir: str | None = None) -> list[str] | None:
  """The dataset's split names, or None when TFDS does not know them."""
  try:
    splits = list(builder(name, data_dir).info.splits)
  except Exception:  # pylint: disable=broad-except
    return None
  return splits or None


def read_all(source, limit: int | None = None) -> list[dict[str, Any]]:
  """All (or the first `limit`) examples of a data source, in order."""
  n = len(source) if limit is None else min(limit, len(source))
  out = []
  batched = hasattr(source, '__getitems__')
  for start in range(0, n, _READ_CHUNK):
    indices = list(range(start, min(n, start + _READ_CHUNK)))
    if batched:
      try:
        out.extend(source.__getitems__(indices))
        continue
      except TypeError:  # tfds.testing.mock_data's __getitems__ is unbound.
        batched = False
    out.extend(source[i] for i in indices)
  return out


def as_text(value) -> str:
  """A TFDS text feature (bytes, str or 0-d array) as str."""
  if hasattr(value, 'item') and not isinstance(value, (bytes, str)):
    value = value.item()
  if isinstance(value, bytes):
    return value.decode('utf-8', 'replace')
  return str(value)


@_own_scratch
def supervised_keys(name: str, data_dir: str | None = None
                    ) -> tuple[str, str] | None:
  """(source key, target key) of a translation dataset, if TFDS says."""
  keys = builder(name, data_dir).info.supervised_keys
  if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return keys[0], keys[1]
  return None


@_own_scratch
def read_translation(name: str, split: str, *, data_dir: str | None,
                     src_key: str, tgt_key: str,
                     limit: int | None = None) -> tuple[list[str], list[str]]:
  """(sources, targets) of one split of a TFDS translation dataset."""
  examples = read_all(open_split(name, split, data_dir), limit)
  if examples and (src_key not in examples[0] or tgt_key not in examples[0]):
    raise ValueError(
        f'TFDS dataset {name!r} examples have keys {sorted(examples[0])}; '
        f'config.data.src_key / tgt_key are {src_key!r} / {tgt_key!r}.')
  return ([as_text(e[src_key]) for e in examples],
          [as_text(e[tgt_key]) for e in examples])


@_own_scratch
def read_ratings(name: str, *, data_dir: str | None = None, split: str = 'train'
                 ) -> Sequence[tuple[str, str, float, str | None, float]]:
  """(user, item, timestamp, title, rating) rows of a ratings dataset."""
  examples = read_all(open_split(name, split, data_dir))
  if examples:
    missing = {'user_id', 'movie_id'} - set(examples[0])
    if missing:
      raise ValueError(
          f'TFDS dataset {name!r} is not a ratings dataset: examples lack '
          f'{sorted(missing)} (keys: {sorted(examples[0])}).')
  rows = []
  for e in examples:
    title = as_text(e['movie_title']) if 'movie_title' in e else None
    rows.append((as_text(e['user_id']), as_text(e['movie_id']),
                 float(e.get('timestamp', 0)), title,
                 float(e.get('user_rating', 0.0))))
  return rows
