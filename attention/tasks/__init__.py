"""Tasks: what the one training loop (attention.training) needs of each task.

``config.task`` names a module here that exports ``Task``. A Task works on
host data and pure functions: it never places or shards data, never sees the
mesh or the loop, and the loop never hands it one. (Its plots and commands
jit the model's forward pass over a few host examples with the parameters
they are given, and write files on process 0 only.) ``Task(config,
workdir)`` loads the data and builds the model, and provides:

  model                   the flax module
  init_params(rng)        initial parameters (pure; the loop jits it)
  train_keys              the batch fields the train step reads
  train_batches()         a checkpointable grain iterator over this process'
                          share of each global training batch (host arrays)
  loss_fn(params, batch, rng, train) -> (loss, metrics)
  eval_batches(split)     host batches of 'validation' or 'test', every example
                          once; padding rows have ``example == -1``
  num_examples(split)     how many examples eval_batches(split) holds
                          (for progress and ETA lines)
  eval_step(params, batch) -> metrics
  summarize(split, means) -> {name: value}
                          the metrics to log (validation) or report (test),
                          from the loop's means of eval_step's metrics
  plots(params, split, directory) -> {tag: image}
                          attention plots of a few fixed examples, written as
                          PNG and .npy into ``directory`` on process 0
  predictors() -> {name: fn(params, batch) -> [B, ...]}
                          test-time outputs per example (decoded tokens); the
                          loop runs each over the test split and gathers them
  test(params, means, predictions, directory) -> {name: value}
                          eval.py's results; plots into ``directory``

Metrics are ``{name: (sum, count)}`` pairs of on-device scalars: the loop
adds them up over batches, devices and processes and divides once
(attention.training.train_lib.mean), so every mean is a global one.
Task-specific commands live with their task (``translate.Task.translate``).

The helpers beside the tasks: decoding (greedy and beam search), metrics
(BLEU, chrF, AER, entropy), ranking (HR@K, NDCG@K) and plotting (heatmaps).
"""

from __future__ import annotations

import importlib

TASKS = ('translate', 'movies')


def get_task(name: str):
  """The ``Task`` class of ``config.task``."""
  if name not in TASKS:
    raise ValueError(f'Unknown config.task {name!r}; valid tasks: '
                     f'{list(TASKS)}.')
  return importlib.import_module(f'attention.tasks.{name}').Task
