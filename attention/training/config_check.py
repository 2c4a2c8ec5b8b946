"""One pass over a whole experiment config, before any data is read or made.

`check(config)` raises a one-line ValueError naming the key, the value and
what is allowed (with a did-you-mean for names), so that a mistake costs
nothing: no data generated, no workdir locked, no checkpoint touched. The
loop calls it first (train_and_evaluate, Trainer); the rules:

  names     config.task, config.model.name and its keys, the model's choice
            fields (score, query, position, scorer), config.dtype,
            config.loss, optimizer.schedule, config.data's keys, source and
            encoding
  ranges    sizes and steps positive; seeds, warm-up and counts >= 0; rates
            (dropout, label smoothing) in [0, 1); learning rate and gradient
            clip > 0; Adam betas in [0, 1); fractions in [0, 1]
  cross     num_heads divisible by num_kv_heads; the transformer's d_model
            divisible by num_heads; a data.path only with a file source;
            global batches divisible by the device count
"""

from __future__ import annotations

import codecs
import difflib
import importlib
import json
import os
import sys
from typing import Any

from absl import logging
import jax
import ml_collections

from attention import models
from attention import tasks
from attention.data import config as data_config
from attention.tasks import movies
from attention.training import checkpoints

REQUIRED = ('task', 'model', 'data', 'dtype', 'seed', 'batch_size',
            'num_train_steps', 'eval_every_steps', 'checkpoint_every_steps',
            'log_every_steps', 'optimizer')
SCHEDULES = ('cosine', 'rsqrt', 'constant')  # config.optimizer.schedule
DTYPES = ('float32', 'bfloat16')  # config.dtype, the compute dtype
# A model field -> the name of the tuple of its valid values in the model's
# module (or a base class's module).
_MODEL_CHOICES = {'score': 'SCORES', 'query': 'QUERIES',
                  'position': 'POSITIONS', 'scorer': 'SCORERS'}

# Dotted keys and what they allow; a key a config does not have is skipped.
_POSITIVE = (
    'batch_size', 'num_train_steps', 'eval_every_steps',
    'checkpoint_every_steps', 'log_every_steps', 'steps_per_call',
    'num_negatives', 'model.num_layers', 'model.d_model', 'model.num_heads',
    'model.num_kv_heads', 'model.mlp_dim', 'model.embed_dim',
    'model.hidden_dim', 'model.attention_dim', 'model.readout_dim',
    'model.chunk_size', 'model.max_length', 'eval.beam_size',
    'eval.num_negatives', 'eval.max_plot_len', 'data.num_buckets',
    'data.pad_multiple', 'data.bucket_run', 'data.eval_batch_size',
    'data.vocab_size', 'data.num_train', 'data.num_validation',
    'data.num_test', 'data.min_len', 'data.max_train_len', 'data.max_test_len',
    'data.max_len', 'data.max_examples')
_NON_NEGATIVE = (
    'seed', 'optimizer.warmup_steps', 'optimizer.weight_decay',
    'optimizer.grad_clip', 'eval.max_users',
    'eval.max_decode_length', 'eval.num_alignment_examples',
    'eval.num_attention_examples', 'eval.num_attention_candidates',
    'eval.length_penalty', 'eval.negatives_seed', 'data.seed',
    'data.num_threads', 'data.prefetch')
_RATES = ('model.dropout_rate', 'model.attention_dropout_rate',
          'model.attention_output_dropout_rate',
          'label_smoothing', 'optimizer.b1', 'optimizer.b2')  # [0, 1)
_FRACTIONS = ('optimizer.final_lr_fraction', 'data.validation_fraction',
              'data.test_fraction')  # [0, 1]
_ABOVE_ZERO = ('optimizer.learning_rate',)  # > 0
_FILE_SOURCES = {'translate': ('tsv',),
                 'movies': ('movielens', 'interactions')}


def check(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Raises a one-line ValueError at the first thing wrong with ``config``."""
  for key in REQUIRED:
    if key not in config:
      raise ValueError(f'The config has no {key!r}; every experiment sets '
                       f'{", ".join(REQUIRED)}.')
  _choice('config.task', config.task, tasks.TASKS)
  _choice('config.dtype', config.dtype, DTYPES)
  _check_model(config.model)
  _check_ranges(config)
  if config.optimizer.get('schedule') is not None:
    _choice('config.optimizer.schedule', config.optimizer.schedule, SCHEDULES)
  if config.task == 'movies' and 'loss' in config:
    _choice('config.loss', config.loss, movies.LOSSES)
  data = data_config.validate(config.data, config.task)
  try:
    codecs.lookup(data.encoding)
  except LookupError:
    raise ValueError(f'config.data.encoding={data.encoding!r} is not a text '
                     "encoding Python knows (e.g. 'utf-8', 'latin-1', "
                     "'cp1252').") from None
  if data.path is not None and data.source not in _FILE_SOURCES[config.task]:
    raise ValueError(
        f'config.data.path={data.path!r} is read only by a file source, but '
        f'config.data.source is {data.source!r}; set config.data.source to '
        f'one of {list(_FILE_SOURCES[config.task])}.')
  for key, size in (('batch_size', config.batch_size),
                    ('data.eval_batch_size', data.eval_batch_size)):
    if size is not None and int(size) % num_devices:
      raise ValueError(
          f'config.{key}={size} (a global batch) does not divide evenly over '
          f'the {num_devices} devices; use a multiple of {num_devices}.')


def _choice(key: str, value: Any, valid) -> None:
  if value not in valid:
    raise ValueError(f'{key}={value!r} is not one of {list(valid)}'
                     f'{_did_you_mean(value, valid)}')


def _did_you_mean(value: Any, valid) -> str:
  """'; did you mean 'x'?' for the closest valid name, else '.'."""
  close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
  return f'; did you mean {close[0]!r}?' if close else '.'


def _check_model(config_model: ml_collections.ConfigDict) -> None:
  """The model's name, keys and choice fields, without building it."""
  name = config_model.get('name')
  _choice('config.model.name', name, models.available())
  model_cls = importlib.import_module(f'attention.models.{name}').Model
  fields = models.config_keys(model_cls)
  if 'dtype' in config_model:
    raise ValueError('config.model.dtype is not a model key; the compute '
                     f'dtype is config.dtype, one of {list(DTYPES)}.')
  for key in config_model:
    if key != 'name' and key not in fields:
      raise ValueError(
          f'config.model.{key} is not a field of model {name!r} (valid '
          f'keys: {sorted(fields)}){_did_you_mean(key, sorted(fields))}')
  for key, constant in _MODEL_CHOICES.items():
    if key in config_model:
      valid = next(getattr(sys.modules[c.__module__], constant)
                   for c in model_cls.__mro__
                   if hasattr(sys.modules.get(c.__module__), constant))
      _choice(f'config.model.{key}', config_model[key], valid)
  heads, kv_heads = config_model.get('num_heads'), config_model.get(
      'num_kv_heads')
  if heads and kv_heads and int(heads) % int(kv_heads):
    raise ValueError(
        f'config.model.num_heads={heads} must be divisible by '
        f'config.model.num_kv_heads={kv_heads} (each key/value head serves '
        'the same number of query heads).')
  width = config_model.get('d_model')
  if name == 'transformer' and heads and width and int(width) % int(heads):
    raise ValueError(f'config.model.d_model={width} must be divisible by '
                     f'config.model.num_heads={heads}.')


def _check_ranges(config: ml_collections.ConfigDict) -> None:
  rules = ([(k, _positive) for k in _POSITIVE]
           + [(k, _non_negative) for k in _NON_NEGATIVE]
           + [(k, _rate) for k in _RATES]
           + [(k, _fraction) for k in _FRACTIONS]
           + [(k, _above_zero) for k in _ABOVE_ZERO])
  for key, rule in rules:
    value = _lookup(config, key)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f'config.{key}={value!r} must be a number.')
    allowed = rule(value)
    if allowed:
      raise ValueError(f'config.{key}={value!r} is out of range: {allowed}.')


def _lookup(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split('.'):
    if not hasattr(node, 'get') or part not in node:
      return None
    node = node[part]
  return node


def _positive(v):
  if v < 1 or v != int(v):
    return 'it must be a whole number >= 1'
  return None


def _non_negative(v):
  return 'it must be >= 0' if v < 0 else None


def _rate(v):
  return 'it must be in [0, 1)' if not 0 <= v < 1 else None


def _fraction(v):
  return 'it must be in [0, 1]' if not 0 <= v <= 1 else None


def _above_zero(v):
  return 'it must be > 0' if not v > 0 else None


# Keys a resumed run may change without changing the experiment: when and
# how often it evaluates, logs and checkpoints, how long it trains (upwards),
# how many steps one compiled call runs (the same batches and parameters, to
# float32 rounding), how the input pipeline is parallelised, the sweep it
# belongs to, and the compute dtype (parameters and optimizer state are
# float32 in either, so the checkpoint is the same; a run started before
# config.dtype existed resumes as 'float32').
RESUMABLE = ('num_train_steps', 'eval_every_steps', 'checkpoint_every_steps',
             'log_every_steps', 'steps_per_call', 'sweep', 'eval.',
             'data.num_threads', 'data.prefetch', 'data.eval_batch_size',
             'dtype')


def config_changes(stored: dict[str, Any], new: dict[str, Any]
                   ) -> tuple[list[str], list[str]]:
  """(experiment changes, harmless changes) between two config dicts.

  Each is a list of 'key: old -> new' lines over dotted keys; a key only
  one side has counts as a change (from or to 'absent').
  """
  old_flat, new_flat = _flatten(stored), _flatten(new)
  experiment, harmless = [], []
  for key in sorted(set(old_flat) | set(new_flat)):
    old, value = old_flat.get(key, 'absent'), new_flat.get(key, 'absent')
    if old == value:
      continue
    line = f'{key}: {old!r} -> {value!r}'
    harmless_key = any(key == k or (k.endswith('.') and key.startswith(k))
                       for k in RESUMABLE)
    (harmless if harmless_key else experiment).append(line)
  return experiment, harmless


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f'{prefix}{key}.'))
    return out
  return {prefix.rstrip('.'): tree}


def check_resume(config: ml_collections.ConfigDict, workdir: str,
                 allow_change: bool) -> None:
  """Checks a resumed run's config against the stored one; records it.

  Keys outside RESUMABLE may change only with ``allow_change``; the first
  start writes config.json, a resume with a changed config
  config.<step>.json beside it (never overwriting).
  """
  new = json.loads(config.to_json_best_effort())
  steps = checkpoints.committed_steps(workdir)
  stored_path = checkpoints.newest_config_path(workdir)
  path = os.path.join(workdir, 'config.json')
  if steps and stored_path is not None:
    start = steps[-1]
    with open(stored_path) as f:
      experiment, harmless = config_changes(json.load(f), new)
    if int(config.num_train_steps) < start:
      raise ValueError(
          f'config.num_train_steps={config.num_train_steps} is below the '
          f'newest checkpoint (step {start}) in {workdir}: there is nothing '
          'to train. Raise it, or score the checkpoint with eval.py.')
    if experiment and not allow_change:
      raise ValueError(
          f'{workdir} holds a run of another config (checkpoint step '
          f'{start}): {"; ".join(experiment)}. Train in a fresh --workdir, or '
          'pass --allow_config_change to continue this run with the new '
          f'values (recorded in config.{start}.json).')
    if not (experiment or harmless):
      return
    logging.warning('Resuming at step %d with a changed config (%s): %s',
                    start, 'experiment changed' if experiment else
                    'the experiment is the same', '; '.join(experiment +
                                                            harmless))
    path = os.path.join(workdir, f'config.{start}.json')
  if jax.process_index() == 0:
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, path)
