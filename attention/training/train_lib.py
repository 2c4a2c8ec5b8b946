"""The one training loop, for every task and model.

``train_and_evaluate(config, workdir)`` trains with a jit-compiled step,
data-parallel over every device of every process: a 1-D device mesh with the
batch split over its 'data' axis and the parameters replicated (jax.pmap's
semantics, written with jax.jit and shardings). It checkpoints the train state
and the data iterator with Orbax, resumes from the newest complete checkpoint,
stops with a clear error on a NaN/Inf loss (writing no checkpoint of that
state), and logs to the console, metrics.jsonl and TensorBoard.

``evaluate_checkpoint(config, workdir, step)`` is eval.py: load, score, plot,
write eval_results.json.

The loop alone touches devices: it builds the mesh, sends the task's host
batches to it, jit-compiles the task's pure functions and sums their
``(sum, count)`` metrics over every batch and process (:func:`mean`, the one
definition of a mean). The task (attention.tasks) hands it host arrays and
pure functions and never calls back.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from attention import tasks
from attention.training import checkpoints as checkpoints_lib
from attention.training import cli
from attention.training import config_check
from attention.training import distributed
from attention.training import writers



PROGRESS_EVERY_S = 10  # eval.py's decoding logs its progress this often


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *,
                           timeout_s: int = distributed.DEFAULT_TIMEOUT_S
                           ) -> bool:
  """Joins a multi-process run: explicit arguments, or the cluster's own.

  See :func:`attention.training.distributed.initialize`. Must run before any JAX
  computation.
  """
  return distributed.initialize(coordinator_address, num_processes,
                                process_id, timeout_s=timeout_s)


def make_mesh() -> jax.sharding.Mesh:
  """All devices of all processes on one 'data' axis."""
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(AxisType.Auto,))


def make_optimizer(config) -> tuple[optax.GradientTransformation, Any]:
  """AdamW with linear warmup, then the configured decay; global-norm clipping."""
  opt = config.optimizer
  lr, warmup = float(opt.learning_rate), int(opt.warmup_steps)
  total = int(config.num_train_steps)
  if opt.schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, max(warmup, 1), max(total, warmup + 1),
        end_value=lr * float(opt.final_lr_fraction))
  elif opt.schedule == 'rsqrt':
    def schedule(step):
      step = jnp.maximum(step.astype(jnp.float32), 1.0)
      return lr * jnp.minimum(step / max(warmup, 1),
                              jnp.sqrt(max(warmup, 1) / step))
  elif opt.schedule == 'constant':
    schedule = (optax.linear_schedule(0.0, lr, warmup) if warmup
                else optax.constant_schedule(lr))
  else:
    raise ValueError(f'Unknown config.optimizer.schedule {opt.schedule!r}; '
                     f'valid: {list(config_check.SCHEDULES)}.')
  clip = (optax.clip_by_global_norm(float(opt.grad_clip))
          if float(opt.grad_clip) else optax.identity())  # 0 = no clipping
  tx = optax.chain(
      clip,
      optax.adamw(schedule, b1=float(opt.b1), b2=float(opt.b2),
                  weight_decay=float(opt.weight_decay)))
  return tx, schedule


def default_workdir(config_path: str) -> str:
  """runs/<experiment>[_<arg>] for --config=configs/<experiment>.py[:<arg>]."""
  path, _, arg = config_path.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{arg}' if arg else name)


def check_workdir(workdir: str) -> str:
  """Creates ``workdir`` and checks that it is writable."""
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'The workdir {workdir} is not writable ({e.strerror}); '
                     'pass a --workdir you can write to.') from None
  return workdir


def mean(total: float, count: float) -> float:
  """sum / count of a (sum, count) metric; NaN when nothing was counted."""
  return float(total) / float(count) if float(count) else float('nan')


class Trainer:
  """Task, mesh, optimizer and the compiled steps, shared by train and eval."""

  def __init__(self, config, workdir: str, mesh=None):
    """``mesh``: default :func:`make_mesh`; an AbstractMesh to lower only."""
    self.mesh = make_mesh() if mesh is None else mesh
    config_check.check(config, self.mesh.size)
    cli.quiet_library_logs()
    self.config = config
    self.workdir = workdir
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P('data'))
    self.stacked_sharding = NamedSharding(self.mesh, P(None, 'data'))
    self.task = tasks.get_task(config.task)(config, workdir)
    self.tx, self.schedule = make_optimizer(config)
    root = jax.random.key(int(config.seed))
    self.init_rng, self.dropout_rng = jax.random.split(root)
    self._compiled: dict[Any, Any] = {}

  def to_device(self, batch: dict[str, np.ndarray], keys=None, *,
                stacked: bool = False) -> dict[str, jax.Array]:
    """This process' share of a global batch -> global arrays on the mesh.

    Only ``keys`` (default: every field of the batch) are sent. ``stacked``:
    the arrays are [K, B, ...], K batches for :attr:`train_steps` (split
    over the mesh on B).
    """
    keys = batch.keys() if keys is None else keys
    host = {k: np.asarray(batch[k]) for k in keys if k in batch}
    sharding = self.stacked_sharding if stacked else self.batch_sharding
    if jax.process_count() == 1:  # the share is the batch: one transfer call
      return jax.device_put(host, sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v)
            for k, v in host.items()}

  def init_state(self) -> dict[str, Any]:
    def init(rng):
      params = self.task.init_params(rng)
      return {'step': jnp.zeros((), jnp.int32), 'params': params,
              'opt_state': self.tx.init(params)}
    return jax.jit(init, out_shardings=self.replicated)(self.init_rng)

  def abstract_state(self) -> dict[str, Any]:
    shapes = jax.eval_shape(self.init_state)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                       sharding=self.replicated), shapes)

  @functools.cached_property
  def train_step(self):
    return self.jit_train_step(self.train_step_fn)

  def jit_train_step(self, step_fn):
    """``step_fn`` jitted as the loop runs it: state donated, replicated."""
    return jax.jit(step_fn, donate_argnums=(0,),
                   out_shardings=(self.replicated, self.replicated))

  def train_step_fn(self, state, batch, rng):
    """One optimizer step (uncompiled) -> (new state, metrics)."""
    rng = jax.random.fold_in(rng, state['step'])
    def loss_fn(params):
      return self.task.loss_fn(params, batch, rng, train=True)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'])
    updates, opt_state = self.tx.update(grads, state['opt_state'],
                                        state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics = dict(metrics)
    metrics['grad_norm'] = (optax.tree.norm(grads), jnp.float32(1))
    metrics['learning_rate'] = (self.schedule(state['step']),
                                jnp.float32(1))
    new_state = {'step': state['step'] + 1, 'params': params,
                 'opt_state': opt_state}
    return new_state, metrics

  @functools.cached_property
  def train_steps(self):
    """:meth:`train_steps_fn` jitted: K steps in one call."""
    return self.jit_train_step(self.train_steps_fn)

  def train_steps_fn(self, state, batches, rng):
    """K optimizer steps in one ``lax.scan`` (uncompiled).

    ``batches``: the arrays of K batches stacked, [K, B, ...]. Each step is
    :meth:`train_step_fn` (the same dropout key per step as K calls of it).

    Returns:
      (state after K steps, metrics stacked: each (sum, count) is ([K], [K])).
    """
    def body(carry, batch):
      return self.train_step_fn(carry, batch, rng)
    return jax.lax.scan(body, state, batches)

  def run_call(self, state, host_batches: list[dict[str, np.ndarray]]):
    """One compiled call over ``host_batches`` (of one shape): one batch runs
    :attr:`train_step`, several are stacked and run :attr:`train_steps`.

    Returns:
      (new state, device metrics: scalars, or stacked [K] for K batches).
    """
    keys = self.task.train_keys
    if len(host_batches) == 1:
      batch = self.to_device(host_batches[0], keys)
      return self.train_step(state, batch, self.dropout_rng)
    stacked = {k: np.stack([b[k] for b in host_batches])
               for k in keys if k in host_batches[0]}
    return self.train_steps(state, self.to_device(stacked, stacked=True),
                            self.dropout_rng)

  def _jit(self, fn):
    """``jax.jit(fn)``, compiled once per function for this trainer."""
    if fn not in self._compiled:
      self._compiled[fn] = jax.jit(fn)
    return self._compiled[fn]

  def means(self, params, split: str) -> dict[str, float]:
    """The task's eval_step summed over every batch of ``split``: sum / count.

    The one summing loop: (sum, count) pairs add up over batches, devices
    and processes, so every mean is a global one.
    """
    step = self._jit(self.task.eval_step)
    totals = None
    for host_batch in self.task.eval_batches(split):
      out = jax.device_get(step(params, self.to_device(host_batch)))
      totals = out if totals is None else jax.tree.map(np.add, totals, out)
    if totals is None:
      raise ValueError(f'The {split!r} split has no batches: its data is '
                       'empty (check config.data).')
    return {name: mean(total, count)
            for name, (total, count) in totals.items()}

  def predictions(self, params, split: str) -> dict[str, dict[int, Any]]:
    """Each of the task's predictors on every example of ``split``.

    Returns {predictor: {example index: its output row}}, gathered from every
    process (padding rows, example -1, dropped).
    """
    out = {}
    for name, fn in self.task.predictors().items():
      step, rows = self._jit(fn), {}
      total = self.task.num_examples(split)
      started = shown = time.time()
      steady = _SteadyRate()  # marked after the first batch, which compiles
      for host_batch in self.task.eval_batches(split):
        if steady.start is not None and time.time() - shown > PROGRESS_EVERY_S:
          shown = time.time()
          logging.info('%s on %s: %d/%d examples in %s, ETA %s', name,
                       split, len(rows), total,
                       _format_seconds(shown - started),
                       steady.eta(len(rows), total))
        batch = self.to_device(host_batch)
        values = multihost_utils.process_allgather(step(params, batch),
                                                   tiled=True)
        examples = multihost_utils.process_allgather(batch['example'],
                                                     tiled=True)
        for value, example in zip(np.asarray(values), np.asarray(examples)):
          if example >= 0:
            rows[int(example)] = value
        steady.mark(len(rows))
      out[name] = rows
    return out

  def evaluate(self, params, step: int, split: str = 'validation'):
    """Validation metrics and plots: (scalars, images)."""
    scalars = self.task.summarize(split, self.means(params, split))
    images = self.task.plots(params, split, os.path.join(
        self.workdir, 'alignments', f'step_{step}'))
    return scalars, images


class _SteadyRate:
  """An ETA from the work done since a first mark (the work before it
  compiled), with pauses (evaluations) left out."""

  def __init__(self):
    self.start = None  # (time, units done) at the mark

  def mark(self, done: int) -> None:
    if self.start is None:
      self.start = (time.time(), done)

  def pause(self, seconds: float) -> None:
    if self.start is not None:
      self.start = (self.start[0] + seconds, self.start[1])

  def eta(self, done: int, total: int) -> str:
    """'h:mm:ss' to do ``total``, or '...' before any steady work."""
    if self.start is None or done <= self.start[1]:
      return '...'
    rate = (done - self.start[1]) / max(time.time() - self.start[0], 1e-9)
    return _format_seconds((total - done) / rate)


class _MetricSums:
  """Host-side running sums of {name: (sum, count)} between log lines."""

  def __init__(self):
    self.sums: dict[str, list[float]] = {}

  def add(self, metrics) -> None:
    for name, (total, count) in metrics.items():
      entry = self.sums.setdefault(name, [0.0, 0.0])
      entry[0] += float(total)
      entry[1] += float(count)

  def means(self, prefix: str) -> dict[str, float]:
    return {f'{prefix}{name}': mean(s, c) for name, (s, c) in self.sums.items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints).

  Holds the workdir's lock throughout (a second run on it is refused) and
  stops early on SIGTERM: after the current call (config.steps_per_call
  steps at most) it writes a checkpoint and returns, and the next run
  resumes from there.

  A resumed run must have the config it started with, but for the keys that
  do not change the experiment (config_check.RESUMABLE); other changes are
  an error that lists them, unless ``allow_config_change``. A changed
  config is recorded in config.<step>.json beside the first start's
  config.json, which is never overwritten.

  Returns:
    The last evaluation's scalars (validation metrics).
  """
  cli.quiet_library_logs()
  config_check.check(config, jax.device_count())  # before the workdir exists
  workdir = check_workdir(workdir)
  with distributed.WorkdirLock(workdir), \
      distributed.PreemptionWatcher() as preemption:
    config_check.check_resume(config, workdir, allow_config_change)
    return _train(config, workdir, preemption)


def _train(config: ml_collections.ConfigDict, workdir: str,
           preemption: distributed.PreemptionWatcher) -> dict[str, float]:
  """train_and_evaluate inside its workdir lock and SIGTERM watch."""
  trainer = Trainer(config, workdir)
  task = trainer.task
  total_steps = int(config.num_train_steps)
  ckpts = checkpoints_lib.Checkpoints(workdir)
  train_iter = task.train_batches()
  had_checkpoints = bool(ckpts.all_steps())
  start, state = ckpts.restore_newest_good(trainer.abstract_state(),
                                           train_iter)
  if start is not None:
    logging.info('Resuming from checkpoint step %d in %s', start,
                 ckpts.directory)
  else:
    start = 0
    state = trainer.init_state()
    if had_checkpoints:  # each failed restore may have moved the iterator
      train_iter = task.train_batches()
  writer = writers.MetricWriter(workdir)
  writer.truncate_after(start)
  num_params = sum(x.size for x in jax.tree.leaves(state['params']))
  logging.info('%s on %s: %s parameters, %d devices, global batch %d; '
               'training steps %d -> %d', config.model.name, config.task,
               f'{num_params:,}', jax.device_count(), config.batch_size,
               start, total_steps)

  last_eval: dict[str, float] = {}

  def run_eval(at_step):
    nonlocal last_eval
    logging.info('evaluating step %d', at_step)
    eval_start = time.time()
    last_eval, images = trainer.evaluate(state['params'], at_step)
    # One line: the evaluation counts as done once it is in metrics.jsonl.
    writer.write_scalars(at_step, {f'eval/{k}': v
                                   for k, v in last_eval.items()})
    writer.write_images(at_step, images)
    logging.info('eval at step %d (%.1fs): %s', at_step,
                 time.time() - eval_start, _short(last_eval))

  # The checkpoint of a step is written before its evaluation: a run killed
  # (or preempted) there resumes past it, so the evaluation is redone here,
  # also when nothing is left to train.
  due = start > 0 and (start % config.eval_every_steps == 0 or
                       start == total_steps)
  missing = due and not writer.logged(start, 'eval/')
  if jax.process_count() > 1:  # process 0 reads the file; all evaluate
    missing = bool(multihost_utils.broadcast_one_to_all(np.int32(missing)))
  if missing:
    logging.info('The evaluation of step %d did not complete before the run '
                 'stopped: running it now.', start)
    run_eval(start)
    writer.flush()
  sums = _MetricSums()
  pending = None  # (step before the call, device metrics), fetched a call late
  interval_start, interval_steps = time.time(), 0
  run_start = time.time()
  steady = _SteadyRate()  # marked at the first log: the first step compiles
  per_call = int(config.get('steps_per_call', 1))
  calls = _CallBatches(train_iter)
  queue: list[list[dict[str, np.ndarray]]] = []  # calls taken, not yet run
  checks = 0  # preemption checks made

  def fetch(before, device_metrics, log_at=(), rate=float('nan')):
    """Checks a call's metrics step by step, adds them to ``sums`` and
    writes the log lines of the steps in ``log_at``."""
    metrics = jax.tree.map(np.atleast_1d, jax.device_get(device_metrics))
    for i in range(len(metrics['loss'][0])):
      at = {name: (total[i], count[i])
            for name, (total, count) in metrics.items()}
      if not (math.isfinite(float(at['loss'][0])) and math.isfinite(
          float(at['grad_norm'][0]))):
        raise FloatingPointError(
            f'The training loss is {mean(*at["loss"])} (gradient norm '
            f'{float(at["grad_norm"][0])}) at step {before + i + 1}: '
            'stopping. No checkpoint of this state was written; '
            f'{ckpts.describe_newest()}. Lower '
            'config.optimizer.learning_rate or check the data.')
      sums.add(at)
      if before + i + 1 in log_at:
        write_log(before + i + 1, rate)

  def write_log(at_step, rate):
    nonlocal sums
    scalars = sums.means('train/')
    scalars['train/steps_per_second'] = rate
    scalars['train/elapsed_seconds'] = time.time() - run_start
    writer.write_scalars(at_step, scalars)
    eta = steady.eta(at_step, total_steps)
    steady.mark(at_step)
    logging.info('step %d/%d  loss %.4f  %.2f steps/s  ETA %s', at_step,
                 total_steps, scalars.get('train/loss', float('nan')),
                 rate, eta)
    sums = _MetricSums()

  step = start
  try:
    while step < total_steps:
      if not queue:  # K steps, or fewer before an eval/checkpoint/the end
        limit = min(per_call, _next_boundary(step, config) - step)
        queue = _split_call(calls.take(limit), per_call)
      host_batches = queue.pop(0)
      n = len(host_batches)
      state, metrics = trainer.run_call(state, host_batches)
      if pending is not None:
        fetch(*pending)
      before, step = step, step + n
      interval_steps += n
      pending = (before, metrics)
      is_last = step == total_steps
      # Stop only where nothing taken from the data is left unrun. The sync
      # point is counted in checks (+1 each), the same on every process.
      stop_now = False
      if not is_last and not queue:
        checks += 1
        stop_now = preemption.should_stop(checks)
      log_now = (step // config.log_every_steps >
                 before // config.log_every_steps) or is_last or stop_now
      eval_now = step % config.eval_every_steps == 0 or is_last
      ckpt_now = step % config.checkpoint_every_steps == 0 or is_last
      ckpt_now = ckpt_now or stop_now
      eval_now = eval_now and not stop_now  # the grace period is short
      if not (log_now or eval_now or ckpt_now):
        continue
      # Everything below sees this call's finite metrics. One rate for the
      # log lines of a call: the steps since the last log over the time since.
      log_at = {s for s in range(before + 1, step + 1)
                if s % config.log_every_steps == 0 or
                (s == step and (is_last or stop_now))}
      jax.block_until_ready(pending[1])
      fetch(*pending, log_at=log_at,
            rate=interval_steps / max(time.time() - interval_start, 1e-9))
      pending = None
      if log_now:
        interval_start, interval_steps = time.time(), 0
      if ckpt_now:
        calls.rewind()  # the data state of ``step``: no batch read ahead
        ckpts.save(step, state, train_iter)
      if eval_now:
        eval_started = time.time()
        run_eval(step)
        interval_start = time.time()  # eval time is not training time
        steady.pause(time.time() - eval_started)  # nor in the ETA's rate
      writer.flush()
      if stop_now:
        logging.warning('Preempted (SIGTERM) at step %d/%d: checkpoint '
                        'written; run the same command again to resume.',
                        step, total_steps)
        break
  finally:
    writer.close()
    ckpts.close()
  return last_eval


class _CallBatches:
  """The training iterator read in runs of batches that share a shape.

  :meth:`take` returns up to ``limit`` batches of one shape (one compiled
  call scans them). To see where a run ends it reads one batch further; that
  batch is held for the next call, together with the iterator's state before
  it, and :meth:`rewind` puts it back, so that a checkpoint records exactly
  the batches trained on.
  """

  def __init__(self, iterator):
    self.iterator = iterator
    self.held = None  # (batch read ahead, the iterator's state before it)

  def take(self, limit: int) -> list[dict[str, np.ndarray]]:
    if self.held is not None:
      batches, self.held = [self.held[0]], None
    else:
      batches = [next(self.iterator)]
    shape = _shape(batches[0])
    while len(batches) < limit:
      before = self.iterator.get_state()
      batch = next(self.iterator)
      if _shape(batch) != shape:
        self.held = (batch, before)
        break
      batches.append(batch)
    return batches

  def rewind(self) -> None:
    if self.held is not None:
      self.iterator.set_state(self.held[1])
      self.held = None


def _shape(batch: dict[str, np.ndarray]) -> tuple:
  return tuple((k, np.shape(v)) for k, v in sorted(batch.items()))


def _split_call(batches: list, per_call: int) -> list[list]:
  """Batches of one shape -> calls of ``per_call`` steps, then single steps.

  The steps left over (before an evaluation or checkpoint step, or at the
  end of a bucket's run) run one per call, so that two call lengths are
  compiled per batch shape.
  """
  full = len(batches) // per_call * per_call
  return ([batches[i:i + per_call] for i in range(0, full, per_call)]
          + [[b] for b in batches[full:]])


def _next_boundary(step: int, config) -> int:
  """The first step after ``step`` that evaluates, checkpoints or ends."""
  every = (int(config.eval_every_steps), int(config.checkpoint_every_steps))
  return min([(step // e + 1) * e for e in every]
             + [int(config.num_train_steps)])


def restore(config: ml_collections.ConfigDict, workdir: str,
            step: int | None = None):
  """(task, parameters, step) of checkpoint ``step`` (default: the newest)."""
  trainer = Trainer(config, os.path.abspath(workdir))
  params, step = _restore_params(trainer, step)
  return trainer.task, params, step


def _restore_params(trainer: Trainer, step: int | None):
  ckpts = checkpoints_lib.Checkpoints(trainer.workdir, read_only=True)
  steps = ckpts.all_steps()
  if not steps:
    raise ValueError(f'No checkpoint in {ckpts.directory}; train first: '
                     f'python train.py --config=... --workdir={trainer.workdir}')
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise ValueError(f'No checkpoint for step {step} in {ckpts.directory}; '
                     f'available steps: {sorted(steps)}.')
  state = ckpts.restore(step, trainer.abstract_state())
  ckpts.close()
  return state['params'], step


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | None = None) -> dict[str, Any]:
  """eval.py: scores a checkpoint on the test split; writes eval_results.json."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise ValueError(f'The workdir {workdir} does not exist; train first.')
  trainer = Trainer(config, workdir)
  params, step = _restore_params(trainer, step)
  logging.info('Evaluating %s at step %d', workdir, step)
  results = trainer.task.test(
      params, trainer.means(params, 'test'),
      trainer.predictions(params, 'test'),
      os.path.join(workdir, 'alignments', f'test_step_{step}'))
  results = {'step': int(step), **results}
  if jax.process_index() == 0:
    path = os.path.join(workdir, 'eval_results.json')
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(results, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  return results


def format_results(results: dict[str, Any]) -> str:
  """A two-column text table of eval results."""
  width = max(len(k) for k in results)
  rows = []
  for key in results:
    value = results[key]
    text = f'{value:.4f}' if isinstance(value, float) else str(value)
    rows.append(f'{key:<{width}}  {text}')
  return '\n'.join(rows)


def _short(scalars: dict[str, float], limit: int = 8) -> str:
  items = list(scalars.items())[:limit]
  return ', '.join(f'{k}={v:.4g}' for k, v in items)


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
