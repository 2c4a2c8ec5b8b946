"""The config.data.* keys: defaults, documentation and validation.

Experiment configs start from `get_config(task)` and override what they need:

    config.data = data_config.get_config('translate')
    config.data.source = 'tsv'
    config.data.path = 'data/spa-eng.zip'

The loaders start with `validate(config_data, task)`, which checks the keys
and the source and returns a copy with every key set: missing or None keys
take the defaults below, so a plain dict with only some keys works too, and
no reader ever repeats a default. A key that is not listed here is an error
that lists the valid ones (it is most likely a typo that would otherwise be
ignored silently). The batching keys, shared by both tasks, are read the same
way through `batching(config_data)`.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

TRANSLATE_SOURCES = ('toy', 'tsv', 'tfds')
MOVIE_SOURCES = ('toy', 'movielens', 'interactions', 'tfds')

# key: (default, type for None defaults, help). Shared by both tasks.
_COMMON = {
    'source': ('toy', None, "translate: 'toy', 'tsv' or 'tfds'; movies: "
               "'toy', 'movielens', 'interactions' or 'tfds'"),
    'path': (None, str, "file, folder or .zip for 'tsv' / 'movielens' / "
             "'interactions'"),
    'name': (None, str, "TFDS dataset name for 'tfds'"),
    'seed': (0, None, 'seed of the data itself (toy generators, splits); '
             'independent of config.seed, which shuffles batches'),
    'on_bad_line': ('error', None, "'error' or 'skip' (count) malformed lines"),
    'encoding': ('utf-8', None, "text encoding of 'tsv' and 'interactions' "
                 'files (MovieLens files use their official encodings)'),
    'tfds_data_dir': (None, str, 'TFDS data dir (default: TFDS default)'),
    'bucketing': (True, None, 'pad batches to length buckets'),
    'num_buckets': (8, None, 'at most this many length buckets / shapes'),
    'pad_multiple': (1, None, 'bucket boundaries are multiples of this '
                     '(8 or 128 suit TPUs)'),
    'bucket_run': (8, None, 'training batches come in runs of this many from '
                   'one length bucket (one shape), so that a compiled call '
                   'of config.steps_per_call steps sees one shape; 1 = each '
                   'batch from any bucket'),
    'eval_batch_size': (None, int, 'global eval batch (default batch_size)'),
    'num_threads': (2, None, 'grain threads making batches ahead'),
    'prefetch': (8, None, 'batches made ahead of time'),
}

# What the input pipeline reads (attention.data.pipeline), for either task.
_BATCHING = ('bucketing', 'num_buckets', 'pad_multiple', 'bucket_run',
             'eval_batch_size', 'num_threads', 'prefetch')
_BATCHING_KEYS = {k: _COMMON[k] for k in _BATCHING}

_TRANSLATE = {
    'num_train': (200000, None, 'toy: training pairs'),
    'num_validation': (1000, None, 'toy: validation pairs'),
    'num_test': (2000, None, 'toy: test pairs'),
    'min_len': (3, None, 'toy: shortest source sentence (words)'),
    'max_train_len': (40, None, 'toy: longest train/validation source'),
    'max_test_len': (60, None, 'toy: longest test source'),
    'src_column': (0, None, 'tsv: column of the source sentence (0 or 1)'),
    'zip_member': (None, str, 'tsv: file to read inside a .zip or folder'),
    'validation_fraction': (0.05, None, 'tsv/tfds: share of source sentences '
                            'held out for validation (tfds: only without a '
                            'validation split)'),
    'test_fraction': (0.05, None, 'tsv/tfds: share held out for test (tfds: '
                      'only without a test split)'),
    'src_key': (None, str, 'tfds: source feature (default: supervised keys)'),
    'tgt_key': (None, str, 'tfds: target feature (default: supervised keys)'),
    'train_split': ('train', None, 'tfds: training split'),
    'validation_split': ('validation', None, 'tfds: validation split'),
    'test_split': ('test', None, 'tfds: test split'),
    'max_examples': (None, int, 'tsv/tfds: read at most this many training '
                     'pairs'),
    'vocab_size': (8000, None, 'tsv/tfds: SentencePiece pieces per language'),
    'spm_model_type': ('unigram', None, "tsv/tfds: 'unigram' or 'bpe'"),
    'max_len': (None, int, 'drop training pairs longer than this many tokens '
                '(EOS included); evaluation pairs are never dropped'),
}

_MOVIES = {
    'num_users': (1000, None, 'toy: users'),
    'num_items': (500, None, 'toy: movies'),
    'min_seq_len': (10, None, 'toy: shortest user history'),
    'max_seq_len': (50, None, 'toy: longest user history'),
    'min_interactions': (5, None, 'drop users with fewer interactions '
                         '(>= 1; users with fewer than 3 train only)'),
    'min_rating': (None, float, 'movielens/tfds: keep ratings >= this '
                   '(default: all)'),
    'max_len': (50, None, 'history window: the most recent items a model '
                'sees'),
}


def _keys(task: str) -> dict[str, tuple[Any, Any, str]]:
  if task == 'translate':
    return {**_COMMON, **_TRANSLATE}
  if task == 'movies':
    return {**_COMMON, **_MOVIES}
  raise ValueError(f"task must be 'translate' or 'movies', got {task!r}.")


def sources(task: str) -> tuple[str, ...]:
  _keys(task)
  return TRANSLATE_SOURCES if task == 'translate' else MOVIE_SOURCES


def get_config(task: str) -> ml_collections.ConfigDict:
  """config.data with every key at its default (source='toy')."""
  c = ml_collections.ConfigDict()
  for key, (default, kind, _) in _keys(task).items():
    if default is None:
      c[key] = config_dict.placeholder(kind)
    else:
      c[key] = default
  return c


def describe(task: str) -> str:
  """A markdown table of the keys of `task`."""
  lines = ['| key | default | meaning |', '| --- | --- | --- |']
  for key, (default, _, help_) in _keys(task).items():
    lines.append(f'| `{key}` | `{default!r}` | {help_} |')
  return '\n'.join(lines)


def validate(config_data: Any, task: str) -> ml_collections.ConfigDict:
  """Checks the keys and the source; returns every key, defaults filled in.

  Args:
    config_data: `config.data` (a ConfigDict or a plain dict, any subset of
      the keys of `task`).
    task: 'translate' or 'movies'.

  Returns:
    A new ConfigDict with every key of `task`: the given value, or the
    default where the key is missing or None.

  Raises:
    ValueError: an unknown key or source, listing the valid ones.
  """
  known = _keys(task)
  given = _given(config_data)
  unknown = sorted(k for k in given if k not in known)
  if unknown:
    raise ValueError(
        f'Unknown config.data key(s) {unknown} for task {task!r}; valid keys: '
        f'{sorted(known)}.')
  filled = _filled(given, known)
  valid = sources(task)
  if filled.source not in valid:
    raise ValueError(
        f'Unknown config.data.source {filled.source!r} for task {task!r}; '
        f'valid sources: {list(valid)}.')
  return filled


def batching(config_data: Any) -> ml_collections.ConfigDict:
  """The batching keys of `config_data` (both tasks), defaults filled in."""
  given = _given(config_data)
  return _filled({k: given.get(k) for k in _BATCHING}, _BATCHING_KEYS)


def _given(config_data: Any) -> dict[str, Any]:
  if config_data is None:
    return {}
  if hasattr(config_data, 'items'):
    return dict(config_data.items())
  raise ValueError(f'config.data must be a ConfigDict or a dict, got '
                   f'{type(config_data).__name__}.')


def _filled(given: Mapping[str, Any],
            known: Mapping[str, tuple[Any, Any, str]]
            ) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      key: default if given.get(key) is None else given[key]
      for key, (default, _, _) in known.items()})
