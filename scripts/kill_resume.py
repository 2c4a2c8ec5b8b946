r"""Kill training anywhere, resume, and check nothing changed: bit for bit.

  python scripts/kill_resume.py --config=configs/mha_translate.py:smoke \
      --workdir=/tmp/kill_resume --kills=12 -- --config.num_train_steps=200

Runs ``train.py`` once without interruption (``<workdir>/reference``), then
again into ``<workdir>/killed``, sending SIGKILL at random moments (seeded)
``--kills`` times and restarting after each, then lets it finish. The kills
land anywhere: during start-up and restore, mid-step, mid-checkpoint-write. It
checks that

* every restart resumed from the newest *committed* checkpoint present when
  the process died (never from one cut off mid-write), and
* the final train state (parameters, optimizer state, step) equals the
  uninterrupted run's bit for bit, and
* metrics.jsonl holds the same lines as the uninterrupted run's (timing
  keys aside): every evaluation present, every logged training step equal,

prints one line per kill (where it landed: start-up / restore, training,
a checkpoint write, an evaluation) and a summary, writes ``<workdir>/kill_resume.json``
and exits 1 if a check failed. Arguments after ``--`` go to every train.py
run (config overrides); log often (``--config.log_every_steps``), as the
delays count from the first logged step: uniform in [0, --max_delay_s],
by default (reference time after its first logged step) / kills, which
spreads the kills over the run; 15% of the kills land during start-up
instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from attention.training import checkpoints  # pylint: disable=g-import-not-at-top,wrong-import-position
from attention.training import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

TMP_MARK = '.orbax-checkpoint-tmp'
committed_steps = checkpoints.committed_steps


class Run:
  """A train.py subprocess whose stderr is read, line by line, by a thread."""

  def __init__(self, workdir: str, extra: list[str], log_path: str, env):
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'),
           f'--workdir={workdir}', *extra]
    self.log = open(log_path, 'w')
    self.started = time.time()
    self.loop_started = threading.Event()
    self.stepping = threading.Event()  # a first 'step N/M' line was logged
    self.first_step_at = None
    self.resumed_from = None
    self.last_logged_step = None
    self.evaluating = False  # between 'evaluating step N' and 'eval at step'
    self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, text=True,
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
    self.reader = threading.Thread(target=self._read, daemon=True)
    self.reader.start()

  def _read(self):
    for line in self.proc.stderr:
      self.log.write(line)
      self.log.flush()
      found = re.search(r'Resuming from checkpoint step (\d+)', line)
      if found:
        self.resumed_from = int(found.group(1))
      logged = re.search(r'\bstep (\d+)/\d+', line)
      if logged:
        self.last_logged_step = int(logged.group(1))
        if self.first_step_at is None:
          self.first_step_at = time.time()
        self.stepping.set()
      if 'training steps' in line:
        self.loop_started.set()
      if re.search(r'\bevaluating step \d+', line):
        self.evaluating = True
      elif re.search(r'\beval at step \d+', line):
        self.evaluating = False
    self.loop_started.set()  # exited
    self.stepping.set()

  def wait(self) -> int:
    rc = self.proc.wait()
    self.reader.join()
    self.log.close()
    return rc


def partial_checkpoints(workdir: str) -> list[str]:
  """Checkpoint folders that a kill cut off (temporary or uncommitted)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(n for n in os.listdir(directory) if TMP_MARK in n or (
      n.isdigit() and not os.path.exists(
          os.path.join(directory, n, checkpoints.COMMIT_FILE))))


TIMING = ('train/steps_per_second', 'train/elapsed_seconds')


def compare_metrics(reference: str, killed: str) -> list[str]:
  """Failures where the two runs' metrics.jsonl lines differ."""
  def lines(workdir):
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    return {(r['step'], 'eval' if any(k.startswith('eval/') for k in r)
             else 'train'): {k: v for k, v in r.items() if k not in TIMING}
            for r in rows}
  want, got = lines(reference), lines(killed)
  failures = [f'metrics: no {kind} line at step {step}'
              for step, kind in sorted(set(want) - set(got))]
  failures += [f'metrics: an extra {kind} line at step {step}'
               for step, kind in sorted(set(got) - set(want))]
  failures += [f'metrics: the {kind} line of step {step} differs'
               for step, kind in sorted(set(want) & set(got))
               if want[step, kind] != got[step, kind]]
  return failures


def final_state(workdir: str, train_args: list[str]):
  """The newest checkpoint's step and full train state, as NumPy leaves."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from attention.training import train_lib  # pylint: disable=g-import-not-at-top
  config_arg = train_args[0].split('=', 1)[1]
  config = sweep.load_config(config_arg, [a for a in train_args[1:]
                                          if a.startswith('--config.')])
  trainer = train_lib.Trainer(config, workdir)
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  step = ckpts.latest_step()
  state = ckpts.restore(step, trainer.abstract_state())
  ckpts.close()
  return step, [np.asarray(x) for x in jax.tree.leaves(state)]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True,
                      help='configs/<experiment>.py[:<arg>]')
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--kills', type=int, default=12)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--max_delay_s', type=float, default=None,
                      help='kill within this many seconds after the first '
                      'logged step; default (reference time after its first '
                      'logged step) / kills')
  parser.add_argument('--max_restarts', type=int, default=None,
                      help='stop after this many starts (default kills + 5)')
  args, extra = parser.parse_known_args(argv)
  extra = [a for a in extra if a != '--']
  if args.kills < 0:
    parser.error(f'--kills must be >= 0, got {args.kills}')
  train_args = [f'--config={args.config}', *extra]
  env = dict(os.environ)
  env.setdefault('JAX_PLATFORMS', 'cpu')
  os.makedirs(args.workdir, exist_ok=True)
  reference = os.path.join(args.workdir, 'reference')
  killed = os.path.join(args.workdir, 'killed')
  for d in (reference, killed):
    shutil.rmtree(d, ignore_errors=True)

  run = Run(reference, train_args,
            os.path.join(args.workdir, 'reference.log'), env)
  rc = run.wait()
  if rc or run.first_step_at is None:
    print(f'the reference run failed (exit {rc}) or logged no step; see '
          f'{args.workdir}/reference.log')
    return 1
  start_up = run.first_step_at - run.started
  loop_time = time.time() - run.first_step_at
  max_delay = args.max_delay_s or max(loop_time / max(args.kills, 1), 0.5)
  print(f'reference: {start_up:.1f} s to the first logged step, then '
        f'{loop_time:.1f} s; kills within {max_delay:.2f} s of the first '
        f'logged step (or, 15% of them, during start-up)', flush=True)

  rng = random.Random(args.seed)
  kills, attempts, failures = [], 0, []
  max_restarts = args.max_restarts or args.kills + 5
  while True:
    attempts += 1
    if attempts > max_restarts + 1:
      failures.append(f'did not finish in {max_restarts} restarts')
      break
    before = committed_steps(killed)
    run = Run(killed, train_args,
              os.path.join(args.workdir, f'killed_{attempts}.log'), env)
    in_loop = True
    if len(kills) < args.kills:
      delay = rng.uniform(0.0, max_delay)
      # Some kills land before the first step: start-up, restore, compile.
      early = rng.random() < 0.15
      if early:
        time.sleep(rng.uniform(0.0, start_up))
      else:
        run.stepping.wait()
        time.sleep(delay)
      in_loop = run.loop_started.is_set()
      evaluating = run.evaluating
      if run.proc.poll() is None:
        os.kill(run.proc.pid, signal.SIGKILL)
    rc = run.wait()
    resumed = run.resumed_from
    # Killed before it logged where it resumes from: nothing to check.
    killed_early = rc == -signal.SIGKILL and resumed is None
    if before and resumed != before[-1] and not killed_early:
      failures.append(f'start {attempts} resumed from {resumed}, expected the '
                      f'newest committed checkpoint {before[-1]}')
    if not before and resumed is not None:
      failures.append(f'start {attempts} resumed from {resumed} although no '
                      'committed checkpoint existed')
    if rc == -signal.SIGKILL:
      after = committed_steps(killed)
      partial = partial_checkpoints(killed)
      where = ('mid-checkpoint-write' if partial else
               'during evaluation' if evaluating else
               'during training' if in_loop else 'start-up / restore')
      kills.append({'start': attempts, 'resumed_from': resumed,
                    'last_logged_step': run.last_logged_step,
                    'newest_committed_after': after[-1] if after else None,
                    'partial_checkpoints': partial, 'where': where})
      print(f'kill {len(kills):2d}: started from {resumed or 0}, last logged '
            f'step {run.last_logged_step}, newest committed checkpoint '
            f'{after[-1] if after else None}; {where}' +
            (f' ({", ".join(partial)} left behind)' if partial else ''),
            flush=True)
      continue
    if rc != 0:
      failures.append(f'start {attempts} exited with {rc}; see '
                      f'{args.workdir}/killed_{attempts}.log')
    break

  bit_exact = False
  if not failures:
    ref_step, ref = final_state(reference, train_args)
    got_step, got = final_state(killed, train_args)
    import numpy as np  # pylint: disable=g-import-not-at-top
    bit_exact = (ref_step == got_step and len(ref) == len(got) and all(
        a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(ref, got)))
    if not bit_exact:
      failures.append(f'final states differ (steps {ref_step} and '
                      f'{got_step})')
    failures += compare_metrics(reference, killed)
  summary = {
      'kills': len(kills),
      'during_training': sum(k['where'] == 'during training' for k in kills),
      'mid_checkpoint_write': sum(k['where'] == 'mid-checkpoint-write'
                                  for k in kills),
      'during_evaluation': sum(k['where'] == 'during evaluation'
                               for k in kills),
      'before_training_loop': sum(k['where'] == 'start-up / restore'
                                  for k in kills),
      'starts': attempts, 'bit_exact': bit_exact, 'failures': failures,
      'seed': args.seed, 'max_delay_s': max_delay, 'train_args': train_args,
      'kill_log': kills,
  }
  with open(os.path.join(args.workdir, 'kill_resume.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  print(f'{summary["kills"]} kills ({summary["during_training"]} during '
        f'training, {summary["mid_checkpoint_write"]} mid-checkpoint-write, '
        f'{summary["during_evaluation"]} during evaluation, '
        f'{summary["before_training_loop"]} during start-up/restore), '
        f'{attempts} starts; final state bit-exact: {bit_exact}; metrics '
        f'equal: {not any(f.startswith("metrics") for f in failures)}')
  for failure in failures:
    print(f'FAILED: {failure}')
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
