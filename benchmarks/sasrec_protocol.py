r"""SASRec protocol comparisons: our settings side by side, and the reference.

  python benchmarks/sasrec_protocol.py --data=FILE.txt --workdir=DIR \
      [--settings=paper,absolute,softmax,...] [--epochs=200] \
      [--reference_dir=PATH] [--repeats=1] [--json=OUT.json]

Trains configs/mha_movies.py:sasrec_paper on a SASRec-format file (write one
with scripts/sasrec_format.py) once per setting: the paper's protocol
('paper') and the variations the docs compare (positions, losses, negatives,
dropout, window). Each run trains ``--epochs`` epochs of ceil(users / 128)
steps (the reference's epoch), evaluates the validation split every 20
epochs (as the reference), then runs eval.py for the test split. With
``--reference_dir`` (a local copy of pmixer/SASRec.pytorch's python/ folder,
kept outside this repository, with the file under its data/ folder) it also
runs the reference (--norm_first: pre-LayerNorm blocks, as ours) at the
same shape (``--shape``: the paper's n = 50, dropout 0.5, or its MovieLens-1M
n = 200, dropout 0.2), alternating with ours when ``--repeats`` > 1.

Prints one table: validation (last evaluation) and test HR@10 / NDCG@10
under the sampled-uniform-100 protocol and, for our runs, full ranking; the
best validation HR@10, the epoch and the training seconds (evaluation
excluded) that reached it; training seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'configs/mha_movies.py:sasrec_paper'
BATCH = 128
EVAL_EPOCHS = 20  # the reference evaluates every 20 epochs

# name -> overrides of the :sasrec_paper config.
SETTINGS = {
    'paper': [],
    'absolute': ['--config.model.positions=absolute'],
    'softmax': ['--config.loss=softmax'],
    'sampled_softmax': ['--config.loss=sampled_softmax',
                        '--config.num_negatives=128'],
    'sampled_softmax_shared': ['--config.loss=sampled_softmax',
                               '--config.num_negatives=128',
                               '--config.share_negatives=True'],
    'bce_16neg': ['--config.num_negatives=16'],
    'dropout_0.2': ['--config.model.dropout_rate=0.2',
                    '--config.model.attention_dropout_rate=0.2'],
    'max_len_200': ['--config.data.max_len=200',
                    '--config.model.dropout_rate=0.2',
                    '--config.model.attention_dropout_rate=0.2'],
    'normal_init': ['--config.model.embed_init=normal'],
    'output_dropout': ['--config.model.attention_output_dropout_rate=0.5'],
}
# The paper's two shapes (§IV-D): n = 50 and dropout 0.5 for the sparse
# data (Games), n = 200 and dropout 0.2 for MovieLens-1M. name -> (our
# overrides, the reference's flags); a setting's own overrides come after.
SHAPES = {
    'sparse': ([], ['--maxlen=50', '--dropout_rate=0.5']),
    'ml1m': (['--config.data.max_len=200', '--config.model.dropout_rate=0.2',
              '--config.model.attention_dropout_rate=0.2'],
             ['--maxlen=200', '--dropout_rate=0.2']),
}
_EVAL_LINE = re.compile(r'eval at step (\d+) \(([\d.]+)s\)')
_REF_LINE = re.compile(
    r'epoch:(\d+), time: ([\d.]+)\(s\), valid \(NDCG@10: ([\d.]+), HR@10: '
    r'([\d.]+)\), test \(NDCG@10: ([\d.]+), HR@10: ([\d.]+)\)')


def count_users(path: str) -> int:
  with open(path, encoding='utf-8') as f:
    return len({line.split()[0] for line in f if line.strip()})


def run_ours(name: str, overrides: list[str], data: str, workdir: str,
             epochs: int, steps_per_epoch: int) -> dict:
  """Trains and tests one setting; returns its row."""
  point = os.path.join(workdir, name)
  steps = epochs * steps_per_epoch
  every = EVAL_EPOCHS * steps_per_epoch
  flags = [f'--config={CONFIG}', f'--config.data.path={data}',
           f'--workdir={point}', f'--config.num_train_steps={steps}',
           f'--config.eval_every_steps={every}',
           f'--config.log_every_steps={every}',
           f'--config.checkpoint_every_steps={steps}'] + overrides
  os.makedirs(point, exist_ok=True)
  log = os.path.join(point, 'train.log')
  with open(log, 'w') as f:
    with Usage() as usage:
      subprocess.run([sys.executable, 'train.py'] + flags, cwd=ROOT,
                     check=True, stdout=f, stderr=subprocess.STDOUT)
    subprocess.run([sys.executable, 'eval.py'] + flags, cwd=ROOT, check=True,
                   stdout=f, stderr=subprocess.STDOUT)
  return {**summarize_ours(name, point, steps_per_epoch), **usage.row}


class Usage:
  """Wall, user and system seconds and minor page faults of the child
  processes that ran inside the ``with`` block."""

  def __enter__(self):
    self.start = (time.time(), resource.getrusage(resource.RUSAGE_CHILDREN))
    return self

  def __exit__(self, *exc):
    wall, before = self.start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    self.row = {'wall_s': time.time() - wall,
                'user_s': after.ru_utime - before.ru_utime,
                'sys_s': after.ru_stime - before.ru_stime,
                'minor_faults': after.ru_minflt - before.ru_minflt}


def summarize_ours(name: str, point: str, steps_per_epoch: int) -> dict:
  """The row of a finished run: its metrics.jsonl, log and eval_results."""
  with open(os.path.join(point, 'train.log'), encoding='utf-8') as f:
    eval_seconds = {int(s): float(t) for s, t in _EVAL_LINE.findall(f.read())}
  elapsed, validation = {}, {}
  with open(os.path.join(point, 'metrics.jsonl'), encoding='utf-8') as f:
    for line in f:
      entry = json.loads(line)
      if 'train/elapsed_seconds' in entry:
        elapsed[entry['step']] = entry['train/elapsed_seconds']
      if 'eval/sampled_uniform100/hr@10' in entry:
        validation[entry['step']] = entry
  with open(os.path.join(point, 'eval_results.json'), encoding='utf-8') as f:
    test = json.load(f)

  def train_seconds(step):  # evaluations before `step` taken out
    return elapsed[step] - sum(t for s, t in eval_seconds.items() if s < step)

  last = max(validation)
  best = max(validation,
             key=lambda s: (validation[s]['eval/sampled_uniform100/hr@10'], -s))
  return {
      'run': name,
      'val_hr10': validation[last]['eval/sampled_uniform100/hr@10'],
      'val_ndcg10': validation[last]['eval/sampled_uniform100/ndcg@10'],
      'test_hr10': test['sampled_uniform100/hr@10'],
      'test_ndcg10': test['sampled_uniform100/ndcg@10'],
      'val_full_hr10': validation[last]['eval/full/hr@10'],
      'val_full_ndcg10': validation[last]['eval/full/ndcg@10'],
      'test_full_hr10': test['full/hr@10'],
      'test_full_ndcg10': test['full/ndcg@10'],
      'best_val_hr10': validation[best]['eval/sampled_uniform100/hr@10'],
      'best_epoch': best // steps_per_epoch,
      'seconds_to_best': train_seconds(best),
      'seconds_per_epoch': train_seconds(last) / (last // steps_per_epoch),
  }


def run_reference(reference_dir: str, data: str, workdir: str, epochs: int,
                  tag: str, shape: str = 'sparse') -> dict:
  """Runs pmixer/SASRec.pytorch at `shape`; returns its row."""
  dataset = os.path.splitext(os.path.basename(data))[0]
  if not os.path.exists(os.path.join(reference_dir, 'data', dataset + '.txt')):
    raise FileNotFoundError(f'The reference reads data/{dataset}.txt under '
                            f'{reference_dir}; copy {data} there.')
  log = os.path.join(workdir, f'reference_{tag}.log')
  os.makedirs(workdir, exist_ok=True)
  with open(log, 'w') as f, Usage() as usage:
    subprocess.run(
        [sys.executable, 'main.py', f'--dataset={dataset}',
         f'--train_dir=protocol_{tag}', '--device=cpu', *SHAPES[shape][1],
         '--norm_first', f'--num_epochs={epochs}'],
        cwd=reference_dir, check=True, stdout=f, stderr=subprocess.STDOUT)
  return {**summarize_reference(f'reference ({tag})', log), **usage.row}


def summarize_reference(name: str, log: str) -> dict:
  with open(log, encoding='utf-8') as f:
    evals = [tuple(float(x) for x in m) for m in _REF_LINE.findall(f.read())]
  if not evals:
    raise ValueError(f'{log} has no evaluation line of the reference.')
  epoch, seconds, v_ndcg, v_hr, t_ndcg, t_hr = evals[-1]
  best = max(evals, key=lambda e: (e[3], -e[0]))
  return {'run': name, 'val_hr10': v_hr, 'val_ndcg10': v_ndcg,
          'test_hr10': t_hr, 'test_ndcg10': t_ndcg,
          'best_val_hr10': best[3], 'best_epoch': int(best[0]),
          'seconds_to_best': best[1], 'seconds_per_epoch': seconds / epoch}


COLUMNS = (('run', 'run'), ('val_hr10', 'val HR@10'),
           ('val_ndcg10', 'val NDCG@10'), ('test_hr10', 'test HR@10'),
           ('test_ndcg10', 'test NDCG@10'), ('val_full_hr10', 'val full HR@10'),
           ('test_full_hr10', 'test full HR@10'),
           ('test_full_ndcg10', 'test full NDCG@10'),
           ('best_val_hr10', 'best val HR@10'), ('best_epoch', 'at epoch'),
           ('seconds_to_best', 's to best'),
           ('seconds_per_epoch', 's / epoch'), ('wall_s', 'wall s'),
           ('user_s', 'user s'), ('sys_s', 'sys s'))


def table(rows: list[dict]) -> str:
  def fmt(key, value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
      return ''
    if key in ('seconds_to_best', 'wall_s', 'user_s', 'sys_s'):
      return f'{value:.0f}'
    if key == 'seconds_per_epoch':
      return f'{value:.3f}'
    return f'{value:.4f}' if isinstance(value, float) else str(value)
  lines = ['| ' + ' | '.join(t for _, t in COLUMNS) + ' |',
           '|' + '---|' * len(COLUMNS)]
  for row in rows:
    lines.append('| ' + ' | '.join(fmt(k, row.get(k)) for k, _ in COLUMNS)
                 + ' |')
  return '\n'.join(lines)


def speed_ratios(rows: list[dict]) -> str:
  """Training epochs/s of each of our settings over the reference's
  (medians over repeats), and the same for the time to the best validation
  HR@10."""
  median = statistics.median_high
  ref = [r for r in rows if r['run'].startswith('reference')]
  if not ref:
    return '(no reference run: no speed ratio)'
  ref_epoch = median([r['seconds_per_epoch'] for r in ref])
  lines = [f'reference: {1 / ref_epoch:.2f} epochs/s (training)']
  for name in dict.fromkeys(r['run'] for r in rows if r not in ref):
    ours = [r for r in rows if r['run'] == name]
    per_epoch = median([r['seconds_per_epoch'] for r in ours])
    lines.append(f'{name}: {1 / per_epoch:.2f} epochs/s, '
                 f'{ref_epoch / per_epoch:.2f}x the reference')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True, help='SASRec-format file.')
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--settings', default='paper',
                      help=f'Comma-separated, of {list(SETTINGS)}.')
  parser.add_argument('--epochs', type=int, default=200)
  parser.add_argument('--shape', default='sparse', choices=sorted(SHAPES),
                      help='sparse: max_len 50, dropout 0.5 (the default of '
                      ':sasrec_paper); ml1m: 200 and 0.2, for both codes.')
  parser.add_argument('--reference_dir', default=None)
  parser.add_argument('--repeats', type=int, default=1)
  parser.add_argument('--json', default=None, help='Also write rows here.')
  args = parser.parse_args(argv)
  names = [s for s in args.settings.split(',') if s]
  unknown = [s for s in names if s not in SETTINGS]
  if unknown:
    parser.error(f'unknown settings {unknown}; valid: {list(SETTINGS)}.')
  if args.epochs < EVAL_EPOCHS or args.epochs % EVAL_EPOCHS:
    parser.error(f'--epochs must be a multiple of {EVAL_EPOCHS}.')
  data = os.path.abspath(args.data)
  workdir = os.path.abspath(args.workdir)
  steps_per_epoch = -(-count_users(data) // BATCH)
  print(f'{data}: {steps_per_epoch} steps per epoch at batch {BATCH}',
        flush=True)
  rows = []
  for r in range(args.repeats):
    ours = SHAPES[args.shape][0]
    jobs = [(n, lambda n=n, r=r: run_ours(
        n, ours + SETTINGS[n], data, os.path.join(workdir, f'r{r}'),
        args.epochs, steps_per_epoch)) for n in names]
    if args.reference_dir:
      ref = ('reference', lambda r=r: run_reference(
          os.path.abspath(args.reference_dir), data, workdir, args.epochs,
          f'r{r}', args.shape))
      jobs = [ref] + jobs if r % 2 else jobs + [ref]  # alternate the order
    for name, job in jobs:
      start = time.time()
      rows.append(job())
      print(f'{name} (repeat {r}): {time.time() - start:.0f} s', flush=True)
  print(table(rows))
  print(speed_ratios(rows))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
