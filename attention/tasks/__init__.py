"""Tasks: what the one training loop (attention.train_lib) needs per task.

``config.task`` names a module here that exports ``Task``. A Task is built as
``Task(config, workdir, trainer)`` (the trainer gives it ``to_device``), loads
its data and model, and provides:

  model                        the flax module
  init_params(rng)             initial parameters
  train_keys                   batch fields the train step reads
  train_iterator()             a checkpointable grain iterator of this
                               process' share of each global batch
  loss_fn(params, batch, rng, train) -> (loss, metrics)
                               metrics: {name: (sum, count)}; the loop logs
                               sum / count, so means are global
  evaluate(params, step, writer)
                               validation scalars; plots on process 0
  test(params, step)           eval.py's results dict
"""

from __future__ import annotations

import importlib
import pkgutil

import jax

from attention.data import pipeline

TASKS = ('translate', 'movies')


def get_task(name: str):
  """The ``Task`` class of ``config.task``."""
  if name not in TASKS:
    raise ValueError(f'Unknown config.task {name!r}; valid tasks: '
                     f'{list(TASKS)}.')
  present = {m.name for m in pkgutil.iter_modules(__path__)}
  if name not in present:
    raise ValueError(f"config.task {name!r} is not implemented yet; "
                     f'implemented: {sorted(present)}.')
  return importlib.import_module(f'attention.tasks.{name}').Task


def split_iterator(split, config, train: bool):
  """This process' share of ``split``: a grain train or eval iterator."""
  kwargs = dict(process_index=jax.process_index(),
                process_count=jax.process_count(),
                local_device_count=jax.local_device_count())
  if train:
    return pipeline.train_iterator(split, config, **kwargs)
  return pipeline.eval_iterator(split, config, **kwargs)
