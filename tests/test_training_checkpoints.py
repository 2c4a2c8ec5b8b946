"""Checkpoints: one cut off mid-write is never loaded, and training killed at
random moments (SIGKILL) resumes bit for bit (scripts/kill_resume.py)."""

import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from attention.training import checkpoints
from attention.training import train_lib
from configs import mha_translate
from conftest import ROOT


def test_kill_resume_script_short(tmp_path):
  """scripts/kill_resume.py: 2 kills at random moments, 20 steps, an
  evaluation every 4: same final state and same metrics.jsonl lines.

  4 steps per compiled call, an evaluation and a checkpoint every 4 steps:
  every restart resumes between calls. (A batch read ahead and put back at
  a stop is the SIGTERM test's, in test_training_distributed.py.)
  """
  out = subprocess.run(
      [sys.executable, 'scripts/kill_resume.py',
       '--config=configs/mha_translate.py:smoke', f'--workdir={tmp_path}',
       '--kills=2', '--seed=1', '--', '--config.num_train_steps=20',
       '--config.checkpoint_every_steps=4', '--config.eval_every_steps=4',
       '--config.log_every_steps=1', '--config.steps_per_call=4'],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  with open(tmp_path / 'kill_resume.json') as f:
    summary = json.load(f)
  assert summary['kills'] == 2 and summary['bit_exact'] is True
  assert summary['failures'] == []
  assert 'final state bit-exact: True; metrics equal: True' in out.stdout
  assert summary['kills'] == sum(summary[k] for k in (
      'during_training', 'mid_checkpoint_write', 'during_evaluation',
      'before_training_loop'))


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('finished'))
  config = mha_translate.get_config('smoke')
  config.eval_every_steps = 1000
  train_lib.train_and_evaluate(config, workdir)
  return config, workdir


def _params(config, workdir):
  return jax.tree.leaves(train_lib.restore(config, workdir)[1])


def _cut_off(src, dst):
  """A copy of checkpoint ``src`` with half its files missing."""
  shutil.copytree(src, dst)
  files = sorted(os.path.join(d, n) for d, _, names in os.walk(dst)
                 for n in names)
  for path in files[::2]:
    os.remove(path)
  return dst


@pytest.mark.parametrize('kind', ['temporary folder', 'no commit file'])
def test_a_checkpoint_cut_off_mid_write_is_never_loaded(finished_run, kind,
                                                        tmp_path):
  config, workdir = finished_run
  want = _params(config, workdir)
  run = str(tmp_path / 'run')
  shutil.copytree(workdir, run)
  ckpt_dir = os.path.join(run, 'checkpoints')
  # Step 4 is being rewritten as step 6 when the process dies.
  if kind == 'temporary folder':  # Orbax's own in-progress write
    partial = os.path.join(ckpt_dir, '6.orbax-checkpoint-tmp-1234')
  else:  # a step folder without Orbax's commit file
    partial = os.path.join(ckpt_dir, '6')
  _cut_off(os.path.join(ckpt_dir, '4'), partial)
  if os.path.exists(os.path.join(partial, checkpoints.COMMIT_FILE)):
    os.remove(os.path.join(partial, checkpoints.COMMIT_FILE))
  # Readers do not see it ...
  reader = checkpoints.Checkpoints(run, read_only=True)
  assert reader.all_steps() == [2, 4] and reader.latest_step() == 4
  with pytest.raises(ValueError, match=r'No committed checkpoint for step 6.*'
                     r'committed steps: \[2, 4\]'):
    reader.restore(6, train_lib.Trainer(config, run).abstract_state())
  reader.close()
  assert checkpoints.committed_steps(run) == [2, 4]
  # ... eval.py uses the newest committed one ...
  for got, expected in zip(_params(config, run), want):
    np.testing.assert_array_equal(got, expected)
  # ... and training resumes from it, replacing the partial one.
  longer = mha_translate.get_config('smoke')
  longer.eval_every_steps = 1000
  longer.num_train_steps = 6
  train_lib.train_and_evaluate(longer, run)
  assert sorted(os.listdir(ckpt_dir)) == ['2', '4', '6']
  assert checkpoints.committed_steps(run) == [2, 4, 6]


def test_newest_config_is_the_latest_resume_s(tmp_path):
  assert checkpoints.newest_config_path(str(tmp_path)) is None
  for name in ('config.json', 'config.4.json', 'config.12.json',
               'config.30.json.tmp', 'config.x.json'):
    (tmp_path / name).write_text('{}')
  assert checkpoints.newest_config_path(str(tmp_path)) == str(
      tmp_path / 'config.12.json')


def _largest_file(step_dir):
  files = [os.path.join(d, n) for d, _, names in os.walk(step_dir)
           for n in names]
  return max(files, key=os.path.getsize)


def _flip_a_bit(step_dir):
  path = _largest_file(step_dir)
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([byte[0] ^ 1]))


def _truncate(step_dir):
  path = _largest_file(step_dir)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _delete_metadata_unverified(step_dir):
  os.remove(os.path.join(step_dir, 'state', '_METADATA'))
  os.remove(os.path.join(step_dir, checkpoints.CHECKSUMS))


@pytest.mark.parametrize('damage, message', [
    (_flip_a_bit, 'has changed since it was written'),
    (_truncate, 'has changed since it was written'),
    (_delete_metadata_unverified, 'cannot be read'),
])
def test_a_corrupt_checkpoint_is_moved_aside_and_training_falls_back(
    finished_run, damage, message, tmp_path, caplog):
  config, workdir = finished_run
  want = _params(config, workdir)
  run = tmp_path / 'run'
  shutil.copytree(workdir, run)
  assert os.path.exists(run / 'checkpoints' / '4' / checkpoints.CHECKSUMS)
  damage(str(run / 'checkpoints' / '4'))
  # eval.py --step=4: a one-line error naming the step and the problem.
  with pytest.raises(checkpoints.CorruptCheckpoint) as error:
    train_lib.restore(config, str(run), 4)
  assert message in str(error.value) and '/checkpoints/4' in str(error.value)
  assert '\n' not in str(error.value)
  # Training moves it aside, kept, and redoes steps 3-4 from step 2: the
  # same parameters as the undamaged run.
  with caplog.at_level(logging.WARNING):
    train_lib.train_and_evaluate(config, str(run))
  said = [r.getMessage() for r in caplog.records
          if 'falling back' in r.getMessage()]
  assert len(said) == 1 and message in said[0]
  assert said[0].endswith(f'Moved it to {run}/corrupt_checkpoints/4-0; '
                          'falling back to the newest older checkpoint (2).')
  assert os.listdir(run / 'corrupt_checkpoints') == ['4-0']
  assert checkpoints.committed_steps(str(run)) == [2, 4]
  for got, expected in zip(_params(config, str(run)), want):
    np.testing.assert_array_equal(got, expected)
