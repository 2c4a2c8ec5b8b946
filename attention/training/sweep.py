r"""Sweeps: a config's list of overrides, one point per run, and their results.

A config sets ``config.sweep = [{'model.num_layers': 1}, {...}, ...]``.
``python train.py --config=... --sweep_index=i`` runs point i into
``<workdir>/<i>-<overrides>`` (one point per cluster job, e.g. a SLURM array
task), and

  python -m attention.training.sweep --workdir=runs/mha_translate

prints the results table of every point found there. The local launcher runs
the whole sweep, N points at a time, one train.py process each:

  python -m attention.training.sweep --config=configs/mha_translate.py \
      --workdir=runs/mha_translate [--parallel=N] [--points=0,2] \
      [--config.<key>=<value> ...]

It skips points that already finished (a committed checkpoint at their
num_train_steps), gives each process its own GPU(s) where there are GPUs
(--devices_per_point), writes each point's log to ``<workdir>/logs/<i>.log``,
and finally prints the results table and writes it to ``results.md`` and
``results.csv`` in the workdir. (``python -m attention.sweep`` is the same
command, under the name it had before this module moved.)
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Sequence

import ml_collections


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with dotted-key ``overrides`` set.

  Raises:
    ValueError: a key that the config does not have, listing the valid ones.
  """
  config = copy.deepcopy(config)
  for dotted, value in overrides.items():
    problem = unknown_key(config, dotted)
    if problem:
      raise ValueError(f'Sweep override {dotted!r}: {problem}.')
    *parents, leaf = dotted.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def unknown_key(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  """What is wrong with ``config.<dotted>`` as a key; None if it exists.

  Names the first part that is not there and lists the valid keys at that
  point (also used for train.py's --config.<key> flags).
  """
  node, where = config, 'config'
  for part in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict):
      return f'{where} is a value, not a group of keys'
    if part not in node:
      return (f'{where} has no key {part!r}; valid keys: '
              f'{", ".join(sorted(node.keys()))}')
    node, where = node[part], f'{where}.{part}'
  return None


def point_name(index: int, overrides: dict[str, Any]) -> str:
  """``<index>-<key=value,...>``, safe as a folder name."""
  text = ','.join(f'{k.split(".")[-1]}={v}' for k, v in overrides.items())
  return f'{index}-' + re.sub(r'[^A-Za-z0-9_.,=+-]', '_', text)


def sweep_point(config: ml_collections.ConfigDict, workdir: str,
                index: int) -> tuple[ml_collections.ConfigDict, str]:
  """(config of point ``index``, its workdir)."""
  points = list(config.get('sweep', None) or [])
  if not points:
    raise ValueError('--sweep_index was given but the config defines no '
                     'sweep (config.sweep is empty).')
  if not 0 <= index < len(points):
    raise ValueError(f'--sweep_index={index} is out of range: the sweep has '
                     f'{len(points)} points (0 to {len(points) - 1}).')
  overrides = dict(points[index])
  point = apply_overrides(config, overrides)
  return point, os.path.join(workdir, point_name(index, overrides))


def collect(workdir: str) -> list[dict[str, Any]]:
  """One row per sweep point under ``workdir``: its name and final metrics.

  eval_results.json (eval.py) when present, else the last validation metrics
  of metrics.jsonl.
  """
  rows = []
  if not os.path.isdir(workdir):
    raise ValueError(f'No sweep folder {workdir}.')
  names = [n for n in os.listdir(workdir) if re.match(r'^\d+-', n)]
  for name in sorted(names, key=lambda n: int(n.split('-')[0])):
    point_dir = os.path.join(workdir, name)
    row: dict[str, Any] = {'point': name}
    results = os.path.join(point_dir, 'eval_results.json')
    metrics = os.path.join(point_dir, 'metrics.jsonl')
    if os.path.exists(results):
      with open(results) as f:
        row.update(json.load(f))
    elif os.path.exists(metrics):
      with open(metrics) as f:
        for line in f:
          entry = json.loads(line)
          if any(k.startswith('eval/') for k in entry):
            row.update(entry)
    rows.append(row)
  return rows


def markdown_table(rows: Sequence[dict[str, Any]],
                   columns: Sequence[str] | None = None) -> str:
  if not rows:
    return '(no sweep points found)'
  if columns is None:
    columns = _columns(rows)
  def fmt(value):
    return f'{value:.4g}' if isinstance(value, float) else str(value)
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '---|' * len(columns)]
  for row in rows:
    lines.append('| ' + ' | '.join(fmt(row.get(c, '')) for c in columns) + ' |')
  return '\n'.join(lines)


def load_config(config_arg: str, overrides: Sequence[str] = ()
                ) -> ml_collections.ConfigDict:
  """The config train.py builds from ``--config=<config_arg> <overrides>``."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values)
  flag_values(['train.py', f'--config={config_arg}', *overrides])
  return flag_values.config


def finished_step(point_dir: str) -> int | None:
  """The point's num_train_steps if it has a committed checkpoint there."""
  from attention.training import checkpoints  # pylint: disable=g-import-not-at-top,line-too-long
  config_path = checkpoints.newest_config_path(point_dir)
  if config_path is None:
    return None
  with open(config_path) as f:
    total = int(json.load(f)['num_train_steps'])
  return total if total in checkpoints.committed_steps(point_dir) else None


def local_gpus() -> list[str]:
  """Ids of the GPUs this host offers (CUDA_VISIBLE_DEVICES, else nvidia-smi)."""
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return [d for d in visible.split(',') if d.strip()]
  if not shutil.which('nvidia-smi'):
    return []
  try:
    out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True,
                         timeout=30, check=False).stdout
  except (OSError, subprocess.TimeoutExpired):
    return []
  return [str(i) for i, line in enumerate(out.splitlines())
          if line.startswith('GPU ')]


def launch(config_arg: str, workdir: str, overrides: Sequence[str] = (), *,
           parallel: int | None = None, devices_per_point: int = 1,
           points: Sequence[int] | None = None) -> dict[int, str]:
  """Runs the sweep's points as train.py processes, ``parallel`` at a time.

  Args:
    config_arg: ``configs/<experiment>.py[:<arg>]``.
    workdir: the sweep folder; point i trains in ``<workdir>/<i>-<...>``.
    overrides: ``--config.<key>=<value>`` for every point.
    parallel: points at a time. Default: on a GPU host, the GPUs divided by
      ``devices_per_point``; on CPU, one per two cores.
    devices_per_point: GPUs each point gets (CUDA_VISIBLE_DEVICES); ignored
      on CPU.
    points: indices to run (default all).

  Returns:
    {index: status}: 'done', 'skipped (finished)', or 'failed (...)'.

  Raises:
    ValueError: a config without a sweep, a bad index, or more parallel
      points than there are GPUs for.
  """
  config = load_config(config_arg, overrides)
  num_points = len(list(config.get('sweep', None) or []))
  if not num_points:
    raise ValueError(f'{config_arg} defines no sweep (config.sweep is empty); '
                     'nothing to launch.')
  points = list(range(num_points)) if points is None else list(points)
  for i in points:
    if not 0 <= i < num_points:
      raise ValueError(f'Point {i} is out of range: the sweep has '
                       f'{num_points} points (0 to {num_points - 1}).')
  if devices_per_point < 1:
    raise ValueError(f'--devices_per_point must be >= 1, got '
                     f'{devices_per_point}.')
  gpus = local_gpus()
  if gpus:
    slots = len(gpus) // devices_per_point
    if slots < 1:
      raise ValueError(f'--devices_per_point={devices_per_point} but this '
                       f'host has {len(gpus)} GPU(s).')
    parallel = slots if parallel is None else parallel
    if parallel > slots:
      raise ValueError(
          f'--parallel={parallel} points x {devices_per_point} GPU(s) each '
          f'needs {parallel * devices_per_point} GPUs; this host has '
          f'{len(gpus)}. Use --parallel<={slots}.')
  else:
    parallel = parallel or max(1, (os.cpu_count() or 1) // 2)
  if parallel < 1:
    raise ValueError(f'--parallel must be >= 1, got {parallel}.')

  workdir = os.path.abspath(workdir)
  logs = os.path.join(workdir, 'logs')
  os.makedirs(logs, exist_ok=True)
  # The repository root, where train.py lives (above attention/).
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  status: dict[int, str] = {}
  queue = []
  for i in points:
    _, point_dir = sweep_point(config, workdir, i)
    step = finished_step(point_dir)
    if step is not None:
      status[i] = 'skipped (finished)'
      print(f'point {i}: finished already (step {step}), skipped', flush=True)
    else:
      queue.append(i)
  free = [gpus[k * devices_per_point:(k + 1) * devices_per_point]
          for k in range(parallel)] if gpus else [[] for _ in range(parallel)]
  running: dict[int, tuple[subprocess.Popen, list[str], float, Any]] = {}
  while queue or running:
    while queue and free:
      i = queue.pop(0)
      devices = free.pop(0)
      env = dict(os.environ)
      if devices:
        env['CUDA_VISIBLE_DEVICES'] = ','.join(devices)
      log = open(os.path.join(logs, f'{i}.log'), 'w')
      cmd = [sys.executable, os.path.join(root, 'train.py'),
             f'--config={config_arg}', f'--workdir={workdir}',
             f'--sweep_index={i}', *overrides]
      running[i] = (subprocess.Popen(cmd, cwd=root, env=env, stdout=log,
                                     stderr=subprocess.STDOUT),
                    devices, time.time(), log)
      where = f' on GPU {",".join(devices)}' if devices else ''
      print(f'point {i}: started{where}, log {log.name}', flush=True)
    time.sleep(0.2)
    for i in list(running):
      proc, devices, start, log = running[i]
      if proc.poll() is None:
        continue
      log.close()
      del running[i]
      free.append(devices)
      seconds = time.time() - start
      if proc.returncode == 0:
        status[i] = 'done'
        print(f'point {i}: done in {seconds:.0f} s', flush=True)
      else:
        status[i] = f'failed (exit {proc.returncode}, see logs/{i}.log)'
        print(f'point {i}: FAILED with exit {proc.returncode} after '
              f'{seconds:.0f} s; see {log.name}', flush=True)
  return status


def csv_table(rows: Sequence[dict[str, Any]],
              columns: Sequence[str] | None = None) -> str:
  columns = list(columns or _columns(rows))
  out = io.StringIO()
  writer = csv.DictWriter(out, columns, extrasaction='ignore')
  writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
  columns = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  return columns


def write_results(workdir: str, rows: Sequence[dict[str, Any]],
                  columns: Sequence[str] | None = None) -> str:
  """Writes results.md and results.csv into ``workdir``; returns the markdown."""
  table = markdown_table(rows, columns)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(table + '\n')
  with open(os.path.join(workdir, 'results.csv'), 'w', newline='') as f:
    f.write(csv_table(rows, columns))
  return table


def _with_status(row: dict[str, Any], workdir: str,
                 status: dict[int, str]) -> dict[str, Any]:
  """``row`` with 'status' (this launch's, else finished/unfinished) second."""
  row = dict(row)
  name = row.pop('point')
  state = status.get(int(name.split('-')[0]))
  if state is None:
    state = ('finished' if finished_step(os.path.join(workdir, name))
             is not None else 'unfinished')
  return {'point': name, 'status': state, **row}


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      epilog='Other --config.<key>=<value> arguments go to every point.')
  parser.add_argument('--workdir', required=True,
                      help='the sweep folder (train.py --workdir)')
  parser.add_argument('--config', default=None,
                      help='configs/<experiment>.py[:<arg>]: run the sweep '
                      '(without it, only print the results table)')
  parser.add_argument('--parallel', type=int, default=None,
                      help='points at a time (default: GPUs / '
                      '--devices_per_point, or one per two CPU cores)')
  parser.add_argument('--devices_per_point', type=int, default=1,
                      help='GPUs per point (default 1)')
  parser.add_argument('--points', default=None,
                      help='comma-separated point indices (default all)')
  parser.add_argument('--columns', default=None,
                      help='comma-separated metric names to show')
  args, overrides = parser.parse_known_args(argv)
  unknown = [a for a in overrides if not a.startswith('--config.')]
  if unknown:
    parser.error(f'unrecognized arguments: {unknown} (only '
                 '--config.<key>=<value> overrides are passed on)')
  if overrides and not args.config:
    parser.error('--config.<key> overrides need --config')
  status = {}
  if args.config:
    points = None
    if args.points:
      points = [int(p) for p in args.points.split(',')]
    try:
      status = launch(args.config, args.workdir, overrides,
                      parallel=args.parallel,
                      devices_per_point=args.devices_per_point, points=points)
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
  columns = None
  if args.columns:
    columns = ['point', 'status'] + args.columns.split(',')
  try:
    rows = collect(args.workdir)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  rows = [_with_status(row, args.workdir, status) for row in rows]
  print(write_results(args.workdir, rows, columns))
  return 1 if any(v.startswith('failed') for v in status.values()) else 0


if __name__ == '__main__':
  sys.exit(main())
