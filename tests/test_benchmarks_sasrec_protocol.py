"""benchmarks/sasrec_protocol.py: the rows it reads from our runs and from
the reference's log, and its arguments (no training here: the :sasrec_paper
config runs end to end in tests/test_sasrec_protocol.py)."""

import importlib.util
import json
import os

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location(
    'bench_sasrec_protocol',
    os.path.join(ROOT, 'benchmarks', 'sasrec_protocol.py'))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_a_run_of_ours_is_read_back(tmp_path):
  """Best validation HR@10, its epoch, and training seconds with the
  evaluations before it taken out."""
  (tmp_path / 'train.log').write_text(
      'I1201 train_lib.py:404] eval at step 10 (3.0s): full/ndcg@10=0.1\n'
      'I1201 train_lib.py:404] eval at step 20 (1.5s): full/ndcg@10=0.2\n')
  lines = []
  for step, elapsed, hr in ((10, 5.0, 0.6), (20, 9.0, 0.5)):
    lines.append({'step': step, 'train/elapsed_seconds': elapsed})
    lines.append({'step': step, 'eval/sampled_uniform100/hr@10': hr,
                  'eval/sampled_uniform100/ndcg@10': hr / 2,
                  'eval/full/hr@10': hr / 10, 'eval/full/ndcg@10': hr / 20})
  (tmp_path / 'metrics.jsonl').write_text(
      ''.join(json.dumps(x) + '\n' for x in lines))
  (tmp_path / 'eval_results.json').write_text(json.dumps(
      {'step': 20, 'sampled_uniform100/hr@10': 0.55,
       'sampled_uniform100/ndcg@10': 0.3, 'full/hr@10': 0.05,
       'full/ndcg@10': 0.02}))
  row = bench.summarize_ours('paper', str(tmp_path), steps_per_epoch=5)
  assert row['val_hr10'] == 0.5 and row['test_hr10'] == 0.55
  assert row['best_val_hr10'] == 0.6 and row['best_epoch'] == 2
  assert row['seconds_to_best'] == 5.0
  assert row['seconds_per_epoch'] == pytest.approx((9.0 - 3.0) / 4)
  assert '| paper | 0.5000 |' in bench.table([row])


def test_the_reference_log_is_read_back(tmp_path):
  log = tmp_path / 'reference.log'
  log.write_text(
      'loss in epoch 20 iteration 4: 0.7\n'
      'Evaluatingepoch:20, time: 7.5(s), valid (NDCG@10: 0.3457, HR@10: '
      '0.5738), test (NDCG@10: 0.3557, HR@10: 0.5885)\n'
      'Evaluatingepoch:40, time: 15.0(s), valid (NDCG@10: 0.3400, HR@10: '
      '0.5700), test (NDCG@10: 0.3600, HR@10: 0.6000)\n')
  row = bench.summarize_reference('reference', str(log))
  assert (row['val_hr10'], row['test_hr10']) == (0.57, 0.6)
  assert (row['best_val_hr10'], row['best_epoch'], row['seconds_to_best']) \
      == (0.5738, 20, 7.5)
  assert row['seconds_per_epoch'] == 15.0 / 40
  log.write_text('loss in epoch 1 iteration 0: 1.3\n')
  with pytest.raises(ValueError, match='no evaluation line'):
    bench.summarize_reference('reference', str(log))


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
  data = tmp_path / 'x.txt'
  data.write_text('1 1\n')
  for argv, message in (
      (['--settings=paper,bogus'], "unknown settings ['bogus']"),
      (['--epochs=30'], '--epochs must be a multiple of 20')):
    with pytest.raises(SystemExit):
      bench.main([f'--data={data}', f'--workdir={tmp_path}'] + argv)
    assert message in capsys.readouterr().err


def test_speed_ratio_against_the_reference():
  rows = [{'run': 'paper', 'seconds_per_epoch': 0.2},
          {'run': 'reference (r0)', 'seconds_per_epoch': 0.4},
          {'run': 'paper', 'seconds_per_epoch': 0.1},
          {'run': 'reference (r1)', 'seconds_per_epoch': 0.5}]
  text = bench.speed_ratios(rows)
  assert 'reference: 2.00 epochs/s' in text
  assert 'paper: 5.00 epochs/s, 2.50x the reference' in text
  assert 'no reference' in bench.speed_ratios(rows[:1])
