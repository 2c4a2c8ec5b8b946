"""Sweeps: a point's overrides, the results table, and the local launcher
(every point in parallel processes, finished points skipped, the table as
markdown and CSV)."""

import csv
import json
import os
import subprocess
import sys

import pytest

from attention.training import sweep
from configs import mha_translate
from conftest import ROOT

# Two points that differ only in their seed: the smoke model, compiled once.
CONFIG = '''
from configs import mha_translate


def get_config(arg=None):
  config = mha_translate.get_config('smoke')
  config.num_train_steps = 2
  config.sweep = [{'seed': 0}, {'seed': 1}]
  return config
'''


def launch(config_path, workdir, *flags, module='attention.training.sweep'):
  return subprocess.run(
      [sys.executable, '-m', module, f'--config={config_path}',
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
  # Again: nothing left to run. (Under the module's old name, which still
  # runs: python -m attention.sweep.)
  again = launch(config_path, workdir, '--config.eval_every_steps=1000',
                 module='attention.sweep')
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
    assert 'config.batch_size=0 is out of range' in f.read()


def test_launcher_refuses_a_config_without_sweep_or_bad_points(tmp_path):
  with pytest.raises(ValueError, match='defines no sweep'):
    sweep.launch(os.path.join(ROOT, 'configs/rnnencdec_translate.py:smoke'),
                 str(tmp_path))
  config_path = tmp_path / 'seeds.py'
  config_path.write_text(CONFIG)
  with pytest.raises(ValueError, match=r'Point 5 is out of range: the sweep '
                     r'has 2 points'):
    sweep.launch(str(config_path), str(tmp_path), points=[5])


def test_sweep_point_overrides_land_in_its_config(tmp_path):
  config = mha_translate.get_config()
  point, point_dir = sweep.sweep_point(config, str(tmp_path), 2)
  assert point.model.num_layers == 3 and point.model.num_kv_heads == 1
  assert config.model.num_kv_heads is None  # the base config is untouched
  assert os.path.basename(point_dir) == '2-num_layers=3,num_kv_heads=1'
  with pytest.raises(ValueError, match='out of range: the sweep has 3'):
    sweep.sweep_point(config, str(tmp_path), 3)
  with pytest.raises(ValueError, match="no key 'num_layer'.*valid keys"):
    sweep.apply_overrides(config, {'model.num_layer': 1})


def test_sweep_results_table(tmp_path):
  for i, bleu in enumerate([10.0, 20.0]):
    point = tmp_path / f'{i}-num_layers={i + 1}'
    point.mkdir()
    (point / 'eval_results.json').write_text(json.dumps({'step': 5,
                                                         'bleu': bleu}))
  table = sweep.markdown_table(sweep.collect(str(tmp_path)))
  assert '| 0-num_layers=1 | 5 | 10 |' in table
  assert '| 1-num_layers=2 | 5 | 20 |' in table
