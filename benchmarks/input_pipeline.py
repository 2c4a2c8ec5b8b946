r"""Input-pipeline throughput of both tasks, and the loop's time outside the step.

  python benchmarks/input_pipeline.py                 # the full run (minutes)
  python benchmarks/input_pipeline.py --quick         # seconds: small data
  python benchmarks/input_pipeline.py --data_dir=DIR  # real data elsewhere
  python benchmarks/input_pipeline.py --json=out.json # also save the report

Part 1, the pipeline alone (no model, no JAX): batches/s of
``attention.data.pipeline.train_iterator`` (grain) at each task's default
config (configs/mha_translate.py, configs/mha_movies.py: global batch 64,
length buckets, the config's grain threads and prefetch), for each data
source:

  translate/toy        the generated toy task (200,000 pairs by default)
  translate/tsv        Tatoeba English->Spanish, the :tatoeba variant
                       (CC-BY 2.0 FR; www.manythings.org/anki, tatoeba.org)
  movies/toy           the generated movie world
  movies/movielens     MovieLens ml-latest-small, the :movielens variant
                       (GroupLens Research; Harper & Konstan 2015, ACM TiiS)

and, side by side, the same iterator with ``num_threads=0`` (each batch made
on demand in the caller's thread: the per-batch cost on one core). The real
files are read from --data_dir (the layout of ../shared/data:
``tatoeba-spa-eng/spa-eng.zip`` and ``ml-latest-small/``); where a file is
missing, or with --quick, small synthetic files of the same formats are
written to a temporary folder instead (the report says which). Target: at
least 500 batches/s per task, the rate a 2 ms accelerator step consumes.

Part 2, the train loop (``attention.training.train_lib.train_and_evaluate``
itself, with one step per compiled call: config.steps_per_call=1) at the
default configs mha_translate and mha_movies
(--quick: their :smoke variants): the share of the loop's wall time spent
outside the compiled step. The benchmark swaps in a ``Trainer`` whose
``train_step`` wraps the jitted step and notes when each call starts and
ends, whose ``to_device`` is timed too, and whose evaluation (after the last
step) is skipped; ``jax.device_get`` (the loop's metrics fetch) is timed
while the loop runs. A step's wall time runs from its call's start to the
next call's: the step, the previous step's metrics fetched, the next batch
taken from the pipeline and sent to the device, a log line every
``log_every_steps``. Steps of a new batch shape (the first of each length
bucket: they compile) and the last step are left out. The wrapper blocks on
half the steps, chosen by a seeded coin (per ``--segment`` steps):

  blocked     it waits for the step (``jax.block_until_ready``): the step's
              device time (from the jitted call's return, the step
              dispatched, to its end) is measured step by step, and nothing
              the host does overlaps it, so ``1 - device / wall`` over these
              steps is an upper bound of the share outside the step.
              Their host time is split into the dispatch
              (the jitted call until it returns), the metrics fetch, the
              next batch (the time between the fetch and the transfer:
              ``next(iterator)``, plus the log line on logging steps), the
              transfer, and the rest.
  overlapped  it only notes the time: the loop as it runs (the next batch is
              taken and sent, and the next step dispatched, while the step
              runs). Their share is ``1 - device / wall`` with a step's
              device time estimated from the blocked steps: the mean of its
              batch shape's, scaled by how slow the nearest blocked steps
              ran (the load of a shared machine drifts); the first
              overlapped step after a blocked one leaves out its dispatch
              (it found the device idle, where the loop would have
              dispatched it during the step before); whole runs of
              overlapped steps are counted. The verdict uses it, with its
              standard error (it carries the noise of a shared machine).

Taking turns in one run keeps both kinds of step under the same load. Target:
under 5%. On a CPU the "device" is the cores the host and grain's threads
run on: host work that overlaps the step also slows it, and counts as
outside the step here. The report also gives the data pipeline's own part:
its time per batch with 0 threads (part 1) over the loop's time per step.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable
from unittest import mock

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from attention.data import movies  # pylint: disable=g-import-not-at-top
from attention.data import pipeline  # pylint: disable=g-import-not-at-top
from attention.data import translation  # pylint: disable=g-import-not-at-top
from configs import mha_movies  # pylint: disable=g-import-not-at-top
from configs import mha_translate  # pylint: disable=g-import-not-at-top

TARGET_BATCHES_PER_S = 500.0  # a 2 ms accelerator step
TARGET_OUTSIDE = 0.05         # share of the loop's wall time
NEAREST = 8  # blocked steps that tell an overlapped step's machine load
SOURCES = (('translate', 'toy'), ('translate', 'tsv'), ('movies', 'toy'),
           ('movies', 'movielens'))
TATOEBA = os.path.join('tatoeba-spa-eng', 'spa-eng.zip')
MOVIELENS = 'ml-latest-small'
ATTRIBUTION = {
    'tsv': 'Tatoeba spa-eng (CC-BY 2.0 FR; www.manythings.org/anki, '
           'tatoeba.org)',
    'movielens': 'MovieLens ml-latest-small (GroupLens Research; F. M. Harper '
                 'and J. A. Konstan, ACM TiiS 5(4), 2015)'}


def log(message: str) -> None:
  print(message, flush=True)


# -- Data: the real files, or synthetic ones of the same formats. ------------

def write_tsv_fixture(path: str, num_lines: int, seed: int = 0) -> str:
  """A Tatoeba-style TSV (English, Spanish, attribution) of made-up words.

  Sentence lengths (1-14 words, mostly 3-7) are roughly Tatoeba's.
  """
  rng = np.random.default_rng(seed)
  syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'so', 'pe', 'di', 'gu',
               'ba', 'fe', 'zo', 'chi', 'an', 'el', 'or', 'us']
  words = sorted({''.join(rng.choice(syllables, rng.integers(1, 4)))
                  for _ in range(3000)})

  def sentence(n):
    text = ' '.join(rng.choice(words, n))
    return text[0].upper() + text[1:] + rng.choice(['.', '?', '!'])

  lengths = np.clip(rng.poisson(5, num_lines) + 1, 1, 14)
  lines = [f'{sentence(n)}\t{sentence(max(1, n + rng.integers(-1, 2)))}\t'
           f'CC-BY 2.0 (France) Attribution: tatoeba.org #{i}'
           for i, n in enumerate(lengths)]
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  return path


def write_movielens_fixture(folder: str, num_users: int, num_items: int,
                            mean_history: int, seed: int = 0) -> str:
  """An ml-latest-small-style folder (ratings.csv, movies.csv).

  Each user rates at least 20 movies (fewer if there are fewer movies),
  ``mean_history`` on average, with popular movies more likely.
  """
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  popularity = 1.0 / np.arange(1, num_items + 1)
  popularity /= popularity.sum()
  least = min(20, num_items)
  rows = []
  for user in range(1, num_users + 1):
    n = min(num_items, least + rng.geometric(1 / max(1, mean_history - least)))
    items = rng.choice(num_items, n, replace=False, p=popularity) + 1
    times = np.sort(rng.integers(10**9, 2 * 10**9, n))
    rows += [f'{user},{item},{rng.integers(1, 11) / 2},{t}\n'
             for item, t in zip(items.tolist(), times.tolist())]
  with open(os.path.join(folder, 'ratings.csv'), 'w') as f:
    f.write('userId,movieId,rating,timestamp\n')
    f.writelines(rows)
  with open(os.path.join(folder, 'movies.csv'), 'w', encoding='utf-8') as f:
    f.write('movieId,title,genres\n')
    f.writelines(f'{i},Movie {i} (2000),Drama\n'
                 for i in range(1, num_items + 1))
  return folder


def source_config(task: str, source: str, *, quick: bool,
                  data_dir: str | None, scratch: str):
  """The default config of ``task`` reading ``source``, and a description.

  ``data_dir`` holds the real files (None: write synthetic ones to
  ``scratch``); --quick shrinks the generated toy data.
  """
  if task == 'translate':
    config = mha_translate.get_config('tatoeba' if source == 'tsv' else None)
  else:
    config = mha_movies.get_config('movielens' if source == 'movielens'
                                   else None)
  c = config.data
  if source == 'toy':
    if quick:
      if task == 'translate':
        c.num_train, c.num_validation, c.num_test = 1000, 16, 16
      else:
        c.num_users, c.num_items = 100, 128
    described = 'generated' + (' (smaller: --quick)' if quick else '')
    return config, described
  real = os.path.join(data_dir, TATOEBA if source == 'tsv' else MOVIELENS
                      ) if data_dir else None
  if real and os.path.exists(real):
    c.path = real
    return config, f'{real}: {ATTRIBUTION[source]}'
  if source == 'tsv':
    lines = 600 if quick else 120_000
    c.path = write_tsv_fixture(os.path.join(scratch, 'spa.txt'), lines)
    return config, f'synthetic TSV, {lines:,} lines'
  users, items, mean = (100, 300, 40) if quick else (610, 9000, 165)
  c.path = write_movielens_fixture(os.path.join(scratch, MOVIELENS), users,
                                   items, mean)
  return config, (f'synthetic ml-latest-small layout, {users} users, '
                  f'{items} movies')


def _data_key(config_data) -> str:
  return json.dumps(dict(config_data.items()), sort_keys=True, default=str)


@contextlib.contextmanager
def loaded_once():
  """Within this, the task loaders load each config.data only once.

  The toy translation pairs take minutes to generate; the pipeline benchmark
  and the loop's Trainer (through the task) then share them.
  """
  cache = {}

  def once(load: Callable[..., Any]):
    def cached(config_data, *args, **kwargs):
      key = _data_key(config_data)
      if key not in cache:
        cache[key] = load(config_data, *args, **kwargs)
      return cache[key]
    return cached

  with mock.patch.object(translation, 'load_translation',
                         once(translation.load_translation)), \
      mock.patch.object(movies, 'load_movies', once(movies.load_movies)):
    yield


def load_split(task: str, config):
  data = (translation.load_translation(config.data) if task == 'translate'
          else movies.load_movies(config.data))
  return data.train


# -- Part 1: the pipeline alone. ---------------------------------------------

def measure_pipeline(split, config, *, num_batches: int, rounds: int,
                     warmup: int, num_threads: int | None = None
                     ) -> dict[str, Any]:
  """Batches/s of config's training iterator over ``split``.

  Args:
    split: a batch source (a task's training split).
    config: the experiment config (batch size, seed, batching keys).
    num_batches: batches timed per round.
    rounds: timed rounds, one after the other on the same iterator.
    warmup: batches taken before timing (the prefetch buffer fills).
    num_threads: overrides config.data.num_threads.

  Returns:
    batches_per_s (median over rounds), per-round rates, the number of
    batches timed, the fields of a batch, the leading dimensions seen (of
    every field) and the distinct shapes of 'src' / 'inputs'.
  """
  config = copy.deepcopy(config)
  if num_threads is not None:
    config.data.num_threads = num_threads
  start = time.perf_counter()
  it = pipeline.train_iterator(split, config, process_index=0,
                               process_count=1)
  first = next(it)
  first_s = time.perf_counter() - start
  key = 'src' if 'src' in first else 'inputs'
  for _ in range(warmup):
    next(it)
  rates, shapes, leading, timed = [], set(), set(), 0
  for _ in range(rounds):
    start = time.perf_counter()
    batches = [next(it) for _ in range(num_batches)]
    rates.append(num_batches / (time.perf_counter() - start))
    timed += len(batches)
    for batch in batches:
      leading.update(v.shape[0] for v in batch.values())
      shapes.add(batch[key].shape)
  return {'batches_per_s': float(np.median(rates)),
          'rates': [round(r, 1) for r in rates], 'batches': timed,
          'first_batch_s': round(first_s, 3), 'fields': sorted(first),
          'leading_dims': sorted(leading),
          'shapes': [list(s) for s in sorted(shapes)]}


def pipeline_rows(args, data_dir: str | None, scratch: str
                  ) -> list[dict[str, Any]]:
  rows = []
  for i, (task, source) in enumerate(SOURCES):
    config, described = source_config(task, source, quick=args.quick,
                                      data_dir=data_dir, scratch=scratch)
    log(f'[{i + 1}/{len(SOURCES)}] {task}/{source}: loading ({described})')
    start = time.perf_counter()
    split = load_split(task, config)
    load_s = time.perf_counter() - start
    log(f'      {len(split):,} training examples in {load_s:.1f}s; timing '
        f'{args.rounds} x {args.batches} batches of {config.batch_size}')
    row = {'task': task, 'source': source, 'data': described,
           'examples': len(split), 'longest': int(split.lengths.max()),
           'batch_size': int(config.batch_size),
           'load_s': round(load_s, 1),
           'num_threads': int(config.data.num_threads),
           'prefetch': int(config.data.prefetch)}
    for name, threads in (('config', None), ('0_threads', 0)):
      m = measure_pipeline(split, config, num_batches=args.batches,
                           rounds=args.rounds, warmup=args.warmup,
                           num_threads=threads)
      row[name] = m
      log(f'      {name.replace("_", " ")}: {m["batches_per_s"]:,.0f} '
          f'batches/s (rounds {m["rates"]}), shapes '
          f'{[tuple(s) for s in m["shapes"]]}')
    rows.append(row)
  return rows


# -- Part 2: the train loop. --------------------------------------------------

class LoopProbe:
  """What the loop does at each step, timed: the step, the transfer of the
  batch to the device (``Trainer.to_device``) and the fetch of metrics
  (``jax.device_get``)."""

  def __init__(self, segment: int):
    if segment < 1:
      raise ValueError(f'segment must be >= 1, got {segment}.')
    self.segment = segment
    self.steps: list[dict[str, Any]] = []
    self.transfers: list[tuple[float, float]] = []
    self.fetches: list[tuple[float, float]] = []

  def timed(self, events: list[tuple[float, float]], fn):
    """``fn``, noting when each call starts and ends in ``events``."""
    def call(*args, **kwargs):
      start = time.perf_counter()
      out = fn(*args, **kwargs)
      events.append((start, time.perf_counter()))
      return out
    return call


class TimedStep:
  """The jitted train step, timed; blocking on half the segments of steps.

  Steps go in segments of ``probe.segment``; a fair coin (seeded) picks the
  segments whose calls wait for the step (``jax.block_until_ready``); the
  others only note the time. (A coin, not strict turns: the loop logs every
  ``log_every_steps``, and strict turns would put every logging step on the
  same side.) Before a blocking call, or a call whose batch has a new shape
  (it compiles: it is timed alone), the step in flight finishes.
  """

  def __init__(self, step, probe: LoopProbe, seed: int = 0):
    self.step, self.probe = step, probe
    self._shapes: set[Any] = set()
    self._coin = np.random.default_rng(seed)
    self._blocking = True

  def __call__(self, state, batch, rng):
    import jax  # pylint: disable=g-import-not-at-top
    calls = self.probe.steps
    shape = tuple(sorted((k, v.shape) for k, v in batch.items()))
    new = shape not in self._shapes
    self._shapes.add(shape)
    if len(calls) % self.probe.segment == 0:
      self._blocking = bool(self._coin.integers(2))
    blocked = self._blocking
    if (blocked or new) and calls and not calls[-1]['blocked']:
      jax.block_until_ready(state)
    start = time.perf_counter()
    out = self.step(state, batch, rng)
    returned = time.perf_counter()  # Dispatched (the step runs on).
    if blocked or new:
      jax.block_until_ready(out)
    calls.append({'start': start, 'returned': returned,
                  'end': time.perf_counter(), 'blocked': blocked or new,
                  'compiled': new, 'shape': shape})
    return out


def _timed_trainer(probe: LoopProbe):
  """A train_lib.Trainer that times its step and transfers into ``probe``
  and skips evaluation (it falls after the last timed step)."""
  from attention.training import train_lib  # pylint: disable=g-import-not-at-top
  base = train_lib.Trainer

  class TimedTrainer(base):

    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      # The jitted step, as base.train_step (a cached_property) builds it.
      self._timed = TimedStep(base.train_step.func(self), probe)
      self.to_device = probe.timed(probe.transfers, super().to_device)

    @property
    def train_step(self):
      return self._timed

    def evaluate(self, params, step, split='validation'):
      del params, step, split
      return {}, {}

  return TimedTrainer


def run_loop(config, steps: int, workdir: str, segment: int) -> LoopProbe:
  """train_and_evaluate for ``steps`` steps, timed."""
  import jax  # pylint: disable=g-import-not-at-top
  from attention.training import train_lib  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(config)
  config.num_train_steps = steps
  config.eval_every_steps = steps  # Only after the last step (skipped).
  config.checkpoint_every_steps = steps
  config.steps_per_call = 1  # the probe times train_step, one step a call
  probe = LoopProbe(segment)
  with mock.patch.object(train_lib, 'Trainer', _timed_trainer(probe)), \
      mock.patch.object(jax, 'device_get',
                        probe.timed(probe.fetches, jax.device_get)):
    train_lib.train_and_evaluate(config, workdir)
  return probe


def _within(events, start, end):
  return [(s, e) for s, e in events if start <= s < end]


def outside_share(probe: LoopProbe, resamples: int = 200) -> dict[str, Any]:
  """Shares of the loop's wall time spent outside the step, and why.

  Step i's wall time runs from its call's start to step i + 1's. Steps that
  compiled and the last step are left out. Blocked steps: device time runs
  from the call's return (the step dispatched) to the step's end, and the
  rest of their wall time is split into the dispatch (the jitted call up to
  its return), the metrics fetch, the transfer, the time between those two
  (the next batch from the pipeline, and the log line on logging steps) and
  the rest. Overlapped steps: device time is the mean of the blocked steps
  of the same batch shape (steps of a shape never blocked are left out),
  times the load factor of the NEAREST blocked steps in the run (their
  device time over their shapes' means); the first overlapped step after a
  blocked one leaves out its dispatch, which found the device idle (in the
  loop the dispatch overlaps the step before). A step's wall time holds part
  of the step before's device time (the loop fetches its metrics one step
  late), so only whole runs of overlapped steps (ended by a blocked step)
  are counted. Standard errors by bootstrap over blocked steps and runs. The
  first step, which always compiles, is left out.
  """
  calls = probe.steps
  blocked, runs, parts = [], [], []
  run = []  # The current run of overlapped steps: (index, shape, wall).
  for i in range(1, len(calls) - 1):
    now, after = calls[i], calls[i + 1]
    if now['compiled']:
      continue
    wall = after['start'] - now['start']
    if not now['blocked']:
      if calls[i - 1]['blocked']:
        # It was dispatched to an idle device: the loop (overlapped
        # throughout) dispatches while the step before runs.
        wall = after['start'] - now['returned']
      run.append((i, now['shape'], wall))
      if after['blocked']:
        runs.append(run)
        run = []
      continue
    dispatch = now['returned'] - now['start']
    device = now['end'] - now['returned']
    blocked.append((i, now['shape'], device, wall))
    fetches = _within(probe.fetches, now['end'], after['start'])
    transfers = _within(probe.transfers, now['end'], after['start'])
    fetch = sum(e - s for s, e in fetches)
    transfer = sum(e - s for s, e in transfers)
    # Between the last fetch (or the step) and the transfer: next(iterator).
    first = transfers[0][0] if transfers else after['start']
    next_batch = first - max([e for _, e in fetches if e <= first] +
                             [now['end']])
    parts.append((dispatch, fetch, next_batch, transfer,
                  wall - device - dispatch - fetch - next_batch - transfer))
  shapes = {k for _, k, _, _ in blocked}
  runs = [r for r in runs if all(k in shapes for _, k, _ in r)]
  if not blocked or not runs:
    raise ValueError(f'Too few steps to time ({len(calls)}): raise '
                     '--loop_steps.')

  def shares(b, o):
    by_shape = collections.defaultdict(list)
    for _, k, d, _ in b:
      by_shape[k].append(d)
    mean = {k: float(np.mean(v)) for k, v in by_shape.items()}
    # The machine's load drifts: scale a shape's mean by how slow the
    # nearest blocked steps ran against their own shapes' means.
    index = np.array([i for i, _, _, _ in b])
    slow = np.array([d / mean[k] for _, k, d, _ in b])
    device = wall = 0.0
    for r in o:
      if all(k in mean for _, k, _ in r):
        for i, k, w in r:
          near = np.argsort(np.abs(index - i), kind='stable')[:NEAREST]
          device += mean[k] * float(slow[near].mean())
          wall += w
    return (1.0 - sum(d for _, _, d, _ in b) / sum(w for _, _, _, w in b),
            1.0 - device / wall)

  outside_blocked, outside = shares(blocked, runs)
  rng = np.random.default_rng(0)
  boot = np.array([shares(
      [blocked[i] for i in rng.integers(0, len(blocked), len(blocked))],
      [runs[i] for i in rng.integers(0, len(runs), len(runs))])
                   for _ in range(resamples)])
  overlapped = [step for r in runs for step in r]
  ms = lambda x: 1e3 * float(np.mean(x))  # pylint: disable=unnecessary-lambda-assignment
  return {'steps': len(calls), 'compiled': sum(c['compiled'] for c in calls),
          'blocked_steps': len(blocked), 'overlapped_steps': len(overlapped),
          'device_ms_per_step': ms([d for _, _, d, _ in blocked]),
          'blocked_loop_ms_per_step': ms([w for _, _, _, w in blocked]),
          'loop_ms_per_step': ms([w for _, _, w in overlapped]),
          'outside_blocked': outside_blocked,
          'outside_blocked_stderr': float(boot[:, 0].std()),
          'outside': outside, 'outside_stderr': float(boot[:, 1].std()),
          'host_ms_per_step': {
              name: ms([p[j] for p in parts]) for j, name in enumerate(
                  ('dispatch', 'metrics_fetch', 'next_batch_and_logging',
                   'transfer', 'other'))}}


@contextlib.contextmanager
def compilation_cache(folder: str):
  """JAX's persistent compilation cache in ``folder``, unless one is set."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.config.jax_compilation_cache_dir:
    yield
    return
  jax.config.update('jax_compilation_cache_dir', folder)
  try:
    yield
  finally:
    jax.config.update('jax_compilation_cache_dir', None)


def loop_rows(args, scratch: str) -> list[dict[str, Any]]:
  import jax  # pylint: disable=g-import-not-at-top
  variant = 'smoke' if args.quick else None
  suffix = ':smoke' if args.quick else ''
  configs = {'mha_translate': mha_translate.get_config(variant),
             'mha_movies': mha_movies.get_config(variant)}
  rows = []
  for name in args.loop_configs:
    config = configs[name]
    log(f'[loop] {name}{suffix}: {args.loop_steps} steps of '
        f'train_lib.train_and_evaluate, half of them blocked (chosen per '
        f'{args.segment} step{"s" if args.segment > 1 else ""})')
    start = time.perf_counter()
    probe = run_loop(config, args.loop_steps,
                     os.path.join(scratch, f'loop-{name}'), args.segment)
    row = {'config': name + suffix, 'batch_size': int(config.batch_size),
           'log_every_steps': int(config.log_every_steps),
           'backend': jax.default_backend(), 'segment': args.segment,
           **outside_share(probe)}
    host = ', '.join(f'{k} {v:.2f}'
                     for k, v in row['host_ms_per_step'].items())
    log(f'      {time.perf_counter() - start:.1f}s in all; device '
        f'{row["device_ms_per_step"]:.1f} ms/step; outside the step: blocked '
        f'steps {row["outside_blocked"]:.1%} (ms: {host}), overlapped steps '
        f'{row["outside"]:.1%} ± {row["outside_stderr"]:.1%}')
    rows.append(row)
  return rows


# -- The report. ----------------------------------------------------------------

def machine() -> dict[str, Any]:
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f
                 if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  out = {'cpu': cpu, 'cores': os.cpu_count(),
         'load_average': round(os.getloadavg()[0], 2),
         'python': platform.python_version()}
  for package in ('jax', 'grain', 'numpy'):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = '?'
  return out


def verdict(report: dict[str, Any]) -> dict[str, Any]:
  out = {}
  for task in sorted({r['task'] for r in report['pipeline']}):
    rows = [r for r in report['pipeline'] if r['task'] == task]
    slowest = min(rows, key=lambda r: r['config']['batches_per_s'])
    rate = slowest['config']['batches_per_s']
    out[task] = {'slowest_source': slowest['source'], 'batches_per_s': rate,
                 'met': rate >= TARGET_BATCHES_PER_S}
  for row in report.get('loop', []):
    # The loop as it runs (overlapped steps); the blocked steps' share, an
    # upper bound measured step by step, alongside.
    out[row['config']] = {'outside': row['outside'],
                          'stderr': row['outside_stderr'],
                          'upper_bound': row['outside_blocked'],
                          'met': row['outside'] < TARGET_OUTSIDE}
  return out


def format_report(report: dict[str, Any]) -> str:
  m = report['machine']
  lines = [
      f'Input pipeline, {report["date"]}: {m["cpu"]}, {m["cores"]} cores, '
      f'load average {m["load_average"]} at the start; python {m["python"]}, '
      f'jax {m["jax"]}, grain {m["grain"]}, numpy {m["numpy"]}'
      + (' (--quick: small data, few batches; not a measurement)'
         if report['quick'] else ''), '',
      '| task | source | examples | batch | shapes (B, L) | batches/s, '
      'config threads | batches/s, 0 threads | ms/batch, 0 threads |',
      '|---|---|---:|---:|---|---:|---:|---:|']
  for r in report['pipeline']:
    cfg, zero = r['config'], r['0_threads']
    lengths = sorted({s[-1] for s in cfg['shapes']})
    lines.append(
        f'| {r["task"]} | {r["source"]} | {r["examples"]:,} | '
        f'{r["batch_size"]} | {len(cfg["shapes"])} shapes, L '
        f'{lengths[0]}-{lengths[-1]} | {cfg["batches_per_s"]:,.0f} '
        f'({r["num_threads"]} threads) | {zero["batches_per_s"]:,.0f} | '
        f'{1e3 / zero["batches_per_s"]:.2f} |')
  lines.append('')
  for r in report['pipeline']:
    lines.append(f'  {r["task"]}/{r["source"]}: {r["data"]}')
  if report.get('loop'):
    lines += ['', '| config | device ms/step | outside the step: blocked '
              'steps (upper bound) | overlapped steps (as the loop runs) | '
              'host ms/step: dispatch, metrics fetch, next batch (+ '
              'logging), transfer, other | data pipeline ms/batch over loop '
              'ms/step '
              '| steps: blocked + overlapped (all) |',
              '|---|---:|---:|---:|---|---:|---|']
    for r in report['loop']:
      host = ', '.join(f'{v:.2f}' for v in r['host_ms_per_step'].values())
      lines.append(
          f'| {r["config"]} ({r["backend"]}) | {r["device_ms_per_step"]:.1f} '
          f'| {r["outside_blocked"]:.1%} ± {r["outside_blocked_stderr"]:.1%} '
          f'| {r["outside"]:.1%} ± {r["outside_stderr"]:.1%} | {host} | '
          f'{r["pipeline_share"]:.1%} | {r["blocked_steps"]} + '
          f'{r["overlapped_steps"]} ({r["steps"]}) |')
  lines += ['', 'Verdict:']
  for name, v in report['verdict'].items():
    if 'batches_per_s' in v:
      lines.append(
          f'  {name}: {"MET" if v["met"] else "NOT MET"}: the slowest '
          f'source ({v["slowest_source"]}) makes {v["batches_per_s"]:,.0f} '
          f'batches/s (target >= {TARGET_BATCHES_PER_S:.0f})')
    else:
      lines.append(
          f'  {name}: {"MET" if v["met"] else "NOT MET"}: '
          f'{v["outside"]:.1%} ± {v["stderr"]:.1%} of the loop outside the '
          f'step as it runs (target < {TARGET_OUTSIDE:.0%}; at most '
          f'{v["upper_bound"]:.1%} with nothing overlapped)')
  return '\n'.join(lines)


def run(args) -> dict[str, Any]:
  """Both parts; the report as a JSON-able dict."""
  data_dir = args.data_dir
  if data_dir is None and not args.quick:
    shared = os.path.join(os.path.dirname(ROOT), 'shared', 'data')
    data_dir = shared if os.path.isdir(shared) else None
  report = {'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
            'quick': bool(args.quick), 'machine': machine(),
            'target_batches_per_s': TARGET_BATCHES_PER_S,
            'target_outside': TARGET_OUTSIDE}
  with tempfile.TemporaryDirectory() as scratch, loaded_once():
    report['pipeline'] = pipeline_rows(args, data_dir, scratch)
    if args.loop_steps:
      with compilation_cache(os.path.join(scratch, 'jax-cache')):
        report['loop'] = loop_rows(args, scratch)
      for row in report['loop']:
        task = 'translate' if 'translate' in row['config'] else 'movies'
        toy = next(r for r in report['pipeline']
                   if (r['task'], r['source']) == (task, 'toy'))
        row['pipeline_ms_per_batch'] = 1e3 / toy['0_threads']['batches_per_s']
        row['pipeline_share'] = (row['pipeline_ms_per_batch'] /
                                 row['loop_ms_per_step'])
  report['verdict'] = verdict(report)
  return report


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='small data and few batches and steps (seconds)')
  parser.add_argument('--data_dir', default=None,
                      help='folder holding tatoeba-spa-eng/spa-eng.zip and '
                      'ml-latest-small/ (default: ../shared/data when it '
                      'exists; with --quick: synthetic files)')
  parser.add_argument('--batches', type=int, default=None,
                      help='batches timed per round (default 1000; quick 20)')
  parser.add_argument('--rounds', type=int, default=None,
                      help='timed rounds, median taken (default 3; quick 1)')
  parser.add_argument('--warmup', type=int, default=None,
                      help='batches taken before timing (default 50; quick '
                      '2)')
  parser.add_argument('--loop_steps', type=int, default=None,
                      help='train-loop steps per config; 0 skips the loop '
                      '(default 300; quick 24)')
  parser.add_argument('--loop_configs', nargs='+',
                      default=['mha_translate', 'mha_movies'],
                      choices=['mha_translate', 'mha_movies'],
                      help='the configs whose loop is timed')
  parser.add_argument('--segment', type=int, default=1,
                      help='loop steps blocked or not together')
  parser.add_argument('--json', default='', help='also write the report here')
  args = parser.parse_args(argv)
  defaults = ({'batches': 20, 'rounds': 1, 'warmup': 2, 'loop_steps': 24}
              if args.quick else
              {'batches': 1000, 'rounds': 3, 'warmup': 50, 'loop_steps': 300})
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  return args


def main(argv=None):
  args = parse_args(argv)
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.INFO)  # The loop's progress lines.
  report = run(args)
  log('')
  log(format_report(report))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(report, f, indent=1)
  return report


if __name__ == '__main__':
  main()
