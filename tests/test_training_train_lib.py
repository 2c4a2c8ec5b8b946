"""The real training loop on the :smoke configs: train, checkpoint, resume,
evaluate, data parallelism, sweeps and bad input."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from attention import checkpoints
from attention import sweep
from attention import train_lib
from configs import bahdanau_translate
from configs import mha_translate
from configs import rnnencdec_translate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {'mha_translate': mha_translate, 'bahdanau_translate':
           bahdanau_translate, 'rnnencdec_translate': rnnencdec_translate}


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def final_params(workdir, config):
  trainer = train_lib.Trainer(config, workdir)
  params, _ = train_lib.restore_params(trainer)
  return params


@pytest.fixture(scope='module')
def mha_run(tmp_path_factory):
  """The mha smoke config trained for its 4 steps (checkpoints at 2 and 4)."""
  workdir = str(tmp_path_factory.mktemp('mha'))
  config = mha_translate.get_config('smoke')
  last_eval = train_lib.train_and_evaluate(config, workdir)
  return config, workdir, last_eval


def test_smoke_run_writes_the_documented_workdir(mha_run):
  config, workdir, last_eval = mha_run
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
  want = final_params(workdir, config)
  # Cut the run back to its step-2 checkpoint, as if it had died there.
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '4'))
  train_lib.train_and_evaluate(config, resumed)
  got = final_params(resumed, config)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                       atol=1e-6), got, want)
  steps = [r['step'] for r in read_metrics(resumed) if 'train/loss' in r]
  assert steps == [2, 4]  # the log has no duplicate of the replayed steps


EVAL_KEYS = ('bleu', 'chrf', 'exact_match', 'token_accuracy', 'aer',
             'beam/bleu', 'beam/chrf', 'beam/exact_match')


def test_eval_writes_every_documented_key(mha_run):
  config, workdir, _ = mha_run
  results = train_lib.evaluate_checkpoint(config, workdir)
  with open(os.path.join(workdir, 'eval_results.json')) as f:
    written = json.load(f)
  assert written == results and written['step'] == 4
  for key in EVAL_KEYS:
    assert key in written, key
  assert any(k.startswith('bleu_by_length/') for k in written)
  assert any(k.startswith('beam/bleu_by_length/') for k in written)
  # The smoke data trains on sources of up to 10 words and tests up to 12.
  for prefix in ('', 'beam/'):
    ranges = {k.split('/')[-1] for k in written
              if k.startswith(prefix + 'exact_match_by_train_range/')}
    assert ranges == {'0-10', '11+'}, ranges
  assert 0.0 <= written['bleu'] <= 100.0
  assert os.path.exists(os.path.join(workdir, 'translations_greedy.tsv'))
  assert os.listdir(os.path.join(workdir, 'alignments', 'test_step_4'))


def test_alignment_plots_of_translations_shorter_or_longer_than_gold(
    mha_run, tmp_path):
  config, workdir, _ = mha_run
  trainer = train_lib.Trainer(config, workdir)
  params, _ = train_lib.restore_params(trainer)
  split = trainer.task.data.test
  # The example whose gold target most exceeds its source: a short
  # translation of it needs room for the gold target in the batch.
  i = int(np.argmax([len(t) - len(s) for s, t in zip(split.src, split.tgt)]))
  assert len(split.tgt[i]) > len(split.src[i])
  for tgt_ids in ([np.zeros(0, np.int32)],
                  [np.concatenate([split.tgt[i]] * 3)]):
    images = trainer.task._plot_alignments(params, split, np.array([i]),
                                           tgt_ids, str(tmp_path))
    assert len(images) == 1
    matrix = np.load(tmp_path / f'example{i}_layer0.npy')
    assert matrix.shape == (len(tgt_ids[0]) + 1, len(split.src[i]) + 1)


@pytest.mark.parametrize('name', ['bahdanau_translate', 'rnnencdec_translate'])
def test_one_train_step_of_each_smoke_config(name, tmp_path):
  config = CONFIGS[name].get_config('smoke')
  config.num_train_steps = 1
  config.eval_every_steps = 1
  last_eval = train_lib.train_and_evaluate(config, str(tmp_path))
  rows = read_metrics(str(tmp_path))
  assert np.isfinite(rows[0]['train/loss']) and 'eval/loss' in rows[-1]
  has_attention = name == 'bahdanau_translate'
  assert ('aer' in last_eval) == has_attention
  assert os.path.isdir(os.path.join(tmp_path, 'alignments')) == has_attention
  results = train_lib.evaluate_checkpoint(config, str(tmp_path))
  assert ('aer' in results) == has_attention
  if has_attention:
    # The per-word breakdown (scripts/aer_by_word.py) adds up to the AER.
    trainer = train_lib.Trainer(config, str(tmp_path))
    params, _ = train_lib.restore_params(trainer)
    out = trainer.task.alignment_misses(params)
    assert out['name'] == 'alpha'
    scored, missed = sum(out['totals'].values()), sum(out['misses'].values())
    assert 0 < scored <= out['gold_links'] and 0 <= missed <= scored
    assert sum(out['offsets'].values()) == missed
    assert last_eval['aer'] == pytest.approx(
        1.0 - 2.0 * (scored - missed) / (scored + out['gold_links']),
        abs=1e-6)
  assert {'bleu', 'beam/bleu', 'exact_match', 'token_accuracy'} <= set(results)


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


@pytest.mark.parametrize('edit, message', [
    (lambda c: setattr(c.model, 'name', 'lstm'),
     r"Unknown config.model.name 'lstm'; valid names: \[.*'rnnsearch'"),
    (lambda c: setattr(c, 'task', 'summarise'),
     r"Unknown config.task 'summarise'; valid tasks"),
    (lambda c: setattr(c.data, 'source', 'csv'),
     r"Unknown config.data.source 'csv'.*valid sources"),
    (lambda c: c.model.unlock().update({'depth': 3}),
     r"Unknown config.model key\(s\) \['depth'\].*valid keys"),
    (lambda c: setattr(c, 'batch_size', 0), 'batch_size must be positive'),
])
def test_bad_config_is_a_clear_error(edit, message, tmp_path):
  config = mha_translate.get_config('smoke')
  edit(config)
  with pytest.raises(ValueError, match=message):
    train_lib.train_and_evaluate(config, str(tmp_path))


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  with pytest.raises(ValueError, match='is not writable'):
    train_lib.train_and_evaluate(mha_translate.get_config('smoke'),
                                 str(blocker / 'run'))


def test_checkpoint_of_another_config_is_refused(mha_run, tmp_path):
  config, workdir, _ = mha_run
  other = str(tmp_path / 'other')
  shutil.copytree(workdir, other)
  wider = mha_translate.get_config('smoke')
  wider.model.d_model = 24
  wider.num_train_steps = 6
  with pytest.raises(ValueError, match=r"parameter 'decoder_layers_0/"
                     r"LayerNorm_0/bias' has shape \(16,\) in the checkpoint "
                     r'but \(24,\) in the model'):
    train_lib.train_and_evaluate(wider, other)


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


def test_unknown_config_variant_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"Unknown config variant 'tiny'; valid "
                     r"variants: \['smoke', 'tatoeba'\]"):
    mha_translate.get_config('tiny')
  assert mha_translate.get_config('tatoeba').data.source == 'tsv'


def test_eval_translates_given_sentences_and_plots_them(mha_run):
  config, workdir, _ = mha_run
  out = train_lib.translate_sentences(config, workdir,
                                      ['the cat walks', 'the dog'])
  assert len(out) == 2 and all(isinstance(t, str) for t in out)
  plots = os.listdir(os.path.join(workdir, 'alignments', 'sentences_step_4'))
  assert {'example0_layer0.png', 'example1_layer0.npy'} <= set(plots)
