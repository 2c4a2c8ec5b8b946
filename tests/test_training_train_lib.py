"""The one training loop on the :smoke configs: the workdir, resume, data
parallelism, the one definition of a mean and bad input."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from attention.training import checkpoints
from attention.training import cli
from attention.training import train_lib
from configs import mha_translate
from conftest import read_metrics
from conftest import ROOT


def test_smoke_run_writes_the_documented_workdir(mha_run):
  _, workdir, last_eval = mha_run
  rows = read_metrics(workdir)
  assert [r['step'] for r in rows if 'train/loss' in r] == [2, 4]
  assert all(np.isfinite(r['train/loss']) for r in rows if 'train/loss' in r)
  assert {'eval/loss', 'eval/accuracy', 'eval/aer', 'eval/aer/best_head',
          'eval/attention_entropy'} <= set(rows[-1])
  assert 0.0 <= last_eval['aer'] <= 1.0
  assert sorted(checkpoints.Checkpoints(workdir).all_steps()) == [2, 4]
  plots = os.listdir(os.path.join(workdir, 'alignments', 'step_4'))
  assert 'example0_layer0.png' in plots and 'example0_layer0.npy' in plots
  assert any(n.startswith('events.out.tfevents') for n in os.listdir(workdir))


def test_tensorboard_events_readable_without_tensorflow(mha_run):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  _, workdir, _ = mha_run
  events = event_accumulator.EventAccumulator(workdir, size_guidance={
      'images': 0, 'scalars': 0})
  events.Reload()
  assert 'train/loss' in events.Tags()['scalars']
  assert 'eval/aer' in events.Tags()['scalars']
  assert any(t.startswith('alignments/') for t in events.Tags()['images'])


def test_resume_equals_an_uninterrupted_run(mha_run, tmp_path):
  config, workdir, _ = mha_run
  _, want, _ = train_lib.restore(config, workdir)
  # Cut the run back to its step-2 checkpoint, as if it had died there.
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '4'))
  train_lib.train_and_evaluate(config, resumed)
  _, got, _ = train_lib.restore(config, resumed)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                       atol=1e-6), got, want)
  steps = [r['step'] for r in read_metrics(resumed) if 'train/loss' in r]
  assert steps == [2, 4]  # the log has no duplicate of the replayed steps


def test_a_resume_redoes_an_evaluation_that_did_not_complete(mha_run,
                                                            tmp_path):
  """Killed during step 4's evaluation (after its checkpoint, before its
  line): the next start has nothing to train but evaluates step 4."""
  config, workdir, last_eval = mha_run
  other = tmp_path / 'other'
  shutil.copytree(workdir, other)
  rows = read_metrics(str(other))
  kept = [r for r in rows if not (r['step'] == 4 and 'eval/loss' in r)]
  assert len(kept) == len(rows) - 1
  shutil.rmtree(other / 'alignments' / 'step_4')
  with open(other / 'metrics.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)
    f.write('{"step": 4, "eval/lo')  # a line cut off by the kill
  again = train_lib.train_and_evaluate(config, str(other))
  assert again == last_eval
  assert read_metrics(str(other)) == rows
  assert (other / 'alignments' / 'step_4').is_dir()
  # Complete now: a further start changes nothing.
  assert train_lib.train_and_evaluate(config, str(other)) == {}
  assert read_metrics(str(other)) == rows


def test_data_parallel_loss_equals_single_device(mha_run, tmp_path):
  """train.py with 4 forced CPU devices: the same losses as 1 device."""
  _, workdir, _ = mha_run
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  out = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/mha_translate.py:smoke',
       f'--workdir={tmp_path}', '--config.eval_every_steps=100'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'workdir: {tmp_path}' in out.stdout
  assert '4 devices' in out.stderr
  four = [r['train/loss'] for r in read_metrics(str(tmp_path))
          if 'train/loss' in r]
  one = [r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r]
  np.testing.assert_allclose(four, one, rtol=1e-5)


def test_one_definition_of_a_mean():
  assert train_lib.mean(3.0, 4.0) == 0.75
  assert math.isnan(train_lib.mean(0.0, 0.0))  # nothing counted


@pytest.mark.parametrize('flag, message', [
    ('--config.model.num_layerz=2', "config.model has no key 'num_layerz'; "
     'valid keys: attention_dropout_rate, d_model'),
    ('--config.modle.x=1', "config has no key 'modle'; valid keys: batch_size"),
    ('--config.batch_size.x=1', 'config.batch_size is a value, not a group'),
])
def test_unknown_config_override_names_the_valid_keys(flag, message,
                                                      monkeypatch):
  """What train.py and eval.py print for a --config.<key> that is not there."""
  monkeypatch.chdir(ROOT)
  argv = ['train.py', '--config=configs/mha_translate.py:smoke']
  found = cli._unknown_config_key(argv + [flag])  # pylint: disable=protected-access
  assert message in found and found.startswith(flag.partition('=')[0])
  assert cli._unknown_config_key(argv + ['--config.seed=3']) is None  # pylint: disable=protected-access


def test_flag_mistakes_are_one_line_and_leave_nothing_behind(tmp_path):
  """train.py with a missing config file, then with an unknown variant."""
  for config in ('configs/nosuch.py', 'configs/mha_translate.py:smok'):
    out = subprocess.run(
        [sys.executable, 'train.py', f'--config={config}',
         f'--workdir={tmp_path / "run"}'], cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS='cpu'), capture_output=True,
        text=True, timeout=300)
    assert out.returncode == 1
    assert 'Traceback' not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / 'run').exists()
    if config.endswith('nosuch.py'):
      assert ("--config: cannot load 'configs/nosuch.py': [Errno 2] No such "
              'file or directory') in out.stderr
    else:
      assert ("Unknown config variant 'smok'; valid variants: ['smoke', "
              "'tatoeba'] (or none).") in out.stderr


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  with pytest.raises(ValueError, match='is not writable'):
    train_lib.train_and_evaluate(mha_translate.get_config('smoke'),
                                 str(blocker / 'run'))


def test_checkpoint_of_another_config_is_refused(mha_run, tmp_path):
  _, workdir, _ = mha_run
  other = str(tmp_path / 'other')
  shutil.copytree(workdir, other)
  wider = mha_translate.get_config('smoke')
  wider.model.d_model = 24
  wider.num_train_steps = 6
  with pytest.raises(ValueError, match=r'holds a run of another config '
                     r'\(checkpoint step 4\): model.d_model: 16 -> 24\. '
                     r'Train in a fresh --workdir, or pass '
                     r'--allow_config_change'):
    train_lib.train_and_evaluate(wider, other)
  # Allowed, the checkpoint still cannot fit the wider model.
  with pytest.raises(ValueError, match=r"parameter 'decoder_layers_0/"
                     r"LayerNorm_0/bias' has shape \(16,\) in the checkpoint "
                     r'but \(24,\) in the model'):
    train_lib.train_and_evaluate(wider, other, allow_config_change=True)


def test_a_resumed_config_change_is_refused_or_recorded(mha_run, tmp_path):
  config, workdir, _ = mha_run
  other = tmp_path / 'other'
  shutil.copytree(workdir, other)
  with open(other / 'config.json') as f:
    first = f.read()
  changed = mha_translate.get_config('smoke')
  changed.optimizer.learning_rate = 0.5
  changed.seed = 7
  with pytest.raises(ValueError, match=r"optimizer.learning_rate: 0.005 -> "
                     r'0.5; seed: 0 -> 7\.'):
    train_lib.train_and_evaluate(changed, str(other))
  shorter = mha_translate.get_config('smoke')
  shorter.num_train_steps = 2
  with pytest.raises(ValueError, match=r'config.num_train_steps=2 is below '
                     r'the newest checkpoint \(step 4\)'):
    train_lib.train_and_evaluate(shorter, str(other))
  # Evaluating more often does not change the experiment: resumed, recorded
  # beside the untouched config.json.
  harmless = mha_translate.get_config('smoke')
  harmless.eval_every_steps = 2
  train_lib.train_and_evaluate(harmless, str(other))
  with open(other / 'config.json') as f:
    assert f.read() == first
  with open(other / 'config.4.json') as f:
    assert json.load(f)['eval_every_steps'] == 2
  assert config.eval_every_steps == 4


def test_nan_loss_stops_with_the_step_and_no_checkpoint(tmp_path):
  config = mha_translate.get_config('smoke')
  config.optimizer.learning_rate = 1e30
  config.optimizer.warmup_steps = 1
  config.checkpoint_every_steps = 1
  with pytest.raises(FloatingPointError, match=r'at step (\d+): stopping') as e:
    train_lib.train_and_evaluate(config, str(tmp_path))
  bad_step = int(e.value.args[0].split('at step ')[1].split(':')[0])
  steps = checkpoints.Checkpoints(str(tmp_path)).all_steps()
  assert all(s < bad_step for s in steps), (steps, bad_step)


def test_the_missing_tpu_library_note_is_dropped_and_real_errors_kept():
  def record(level, message):
    return logging.LogRecord('jax._src.xla_bridge', level, 'xla_bridge.py', 1,
                             message, None, None)
  quiet = cli._QuietLibraries()  # pylint: disable=protected-access
  missing = ("Unable to initialize backend 'tpu': INTERNAL: Failed to open "
             'libtpu.so: libtpu.so: cannot open shared object file: No such '
             'file or directory')
  assert not quiet.filter(record(logging.INFO, missing))
  assert quiet.filter(record(logging.INFO, "Unable to initialize backend "
                             "'tpu': ABORTED: the TPU is in use"))
  assert quiet.filter(record(logging.ERROR, missing))


def test_the_entry_points_say_what_next_and_where_results_went(tmp_path):
  text = cli.after_training('configs/mha_translate.py:smoke',
                            {'model.num_layers': 3}, str(tmp_path))
  assert (f'python eval.py --config=configs/mha_translate.py:smoke '
          f'--config.model.num_layers=3 --workdir={tmp_path}') in text
  assert f'tensorboard --logdir={tmp_path}' in text
  (tmp_path / 'alignments' / 'test_step_4').mkdir(parents=True)
  (tmp_path / 'translations_greedy.tsv').write_text('')
  text = cli.after_evaluation(str(tmp_path), 4)
  assert text.splitlines() == [
      f'Results: {tmp_path}/eval_results.json',
      f'Plots: {tmp_path}/alignments/test_step_4/',
      f'Translations: {tmp_path}/translations_greedy.tsv']
