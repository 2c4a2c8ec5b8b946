"""Sweeps: a config's list of overrides, one point per run, and their results.

A config sets ``config.sweep = [{'model.num_layers': 1}, {...}, ...]``.
``python train.py --config=... --sweep_index=i`` runs point i into
``<workdir>/<i>-<overrides>`` (one point per cluster job, e.g. a SLURM array
task), and

  python -m attention.sweep --workdir=runs/mha_translate

prints the results table of every point found there.
"""

from __future__ import annotations

import copy
import json
import os
import re
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
    node = config
    *parents, leaf = dotted.split('.')
    for i, part in enumerate(parents):
      if part not in node:
        raise ValueError(f'Sweep override {dotted!r}: no key '
                         f'{".".join(parents[:i + 1])!r}; valid keys there: '
                         f'{sorted(node.keys())}.')
      node = node[part]
    if leaf not in node:
      raise ValueError(f'Sweep override {dotted!r}: no key {leaf!r} in '
                       f'config.{".".join(parents) or ""}; valid keys: '
                       f'{sorted(node.keys())}.')
    node[leaf] = value
  return config


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
    columns = []
    for row in rows:
      columns += [k for k in row if k not in columns]
  def fmt(value):
    return f'{value:.4g}' if isinstance(value, float) else str(value)
  lines = ['| ' + ' | '.join(columns) + ' |',
           '|' + '---|' * len(columns)]
  for row in rows:
    lines.append('| ' + ' | '.join(fmt(row.get(c, '')) for c in columns) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True,
                      help='the sweep folder (train.py --workdir)')
  parser.add_argument('--columns', default=None,
                      help='comma-separated metric names to show')
  args = parser.parse_args(argv)
  columns = None
  if args.columns:
    columns = ['point'] + args.columns.split(',')
  print(markdown_table(collect(args.workdir), columns))


if __name__ == '__main__':
  main()
