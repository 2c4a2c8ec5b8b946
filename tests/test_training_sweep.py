"""The local sweep launcher: every point in parallel processes, finished
points skipped, the results table as markdown and CSV."""

import csv
import os
import subprocess
import sys

import pytest

from attention import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two points that differ only in their seed: the smoke model, compiled once.
CONFIG = '''
from configs import mha_translate


def get_config(arg=None):
  config = mha_translate.get_config('smoke')
  config.num_train_steps = 2
  config.sweep = [{'seed': 0}, {'seed': 1}]
  return config
'''


def launch(config_path, workdir, *flags):
  return subprocess.run(
      [sys.executable, '-m', 'attention.sweep', f'--config={config_path}',
       f'--workdir={workdir}', '--parallel=2', *flags],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, timeout=600)


def test_launcher_runs_every_point_then_skips_finished_ones(tmp_path):
  config_path = tmp_path / 'seeds.py'
  config_path.write_text(CONFIG)
  workdir = tmp_path / 'sweep'
  out = launch(config_path, workdir, '--config.eval_every_steps=1000')
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert 'point 0: started' in out.stdout and 'point 1: done' in out.stdout
  assert '| 0-seed=0 | done | 2 |' in out.stdout
  assert os.path.exists(workdir / 'logs' / '1.log')
  with open(workdir / 'results.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['point'] for r in rows] == ['0-seed=0', '1-seed=1']
  assert all(r['status'] == 'done' and r['step'] == '2' for r in rows)
  assert float(rows[0]['eval/loss']) != float(rows[1]['eval/loss'])
  with open(workdir / 'results.md') as f:
    assert f.read().startswith('| point | status | step | eval/')
  # Again: nothing left to run.
  again = launch(config_path, workdir, '--config.eval_every_steps=1000')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'point 0: finished already (step 2), skipped' in again.stdout
  assert 'point 1: finished already (step 2), skipped' in again.stdout
  assert 'started' not in again.stdout
  assert '| 1-seed=1 | skipped (finished) | 2 |' in again.stdout


def test_launcher_reports_a_failed_point(tmp_path):
  config_path = tmp_path / 'bad.py'
  config_path.write_text(CONFIG.replace("{'seed': 1}",
                                        "{'batch_size': 0}"))
  out = launch(config_path, tmp_path / 'sweep', '--points=1')
  assert out.returncode == 1
  assert 'point 1: FAILED with exit 1' in out.stdout
  with open(tmp_path / 'sweep' / 'logs' / '1.log') as f:
    assert 'batch_size must be positive' in f.read()


def test_launcher_refuses_a_config_without_sweep_or_bad_points(tmp_path):
  with pytest.raises(ValueError, match='defines no sweep'):
    sweep.launch(os.path.join(ROOT, 'configs/rnnencdec_translate.py:smoke'),
                 str(tmp_path))
  config_path = tmp_path / 'seeds.py'
  config_path.write_text(CONFIG)
  with pytest.raises(ValueError, match=r'Point 5 is out of range: the sweep '
                     r'has 2 points'):
    sweep.launch(str(config_path), str(tmp_path), points=[5])
