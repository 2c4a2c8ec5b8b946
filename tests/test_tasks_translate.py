"""The translation task through the loop, on the :smoke configs: eval.py's
results, alignment plots, translating given sentences, the AER breakdown."""

import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from attention.training import train_lib
from configs import bahdanau_translate
from configs import rnnencdec_translate
from conftest import read_metrics
from conftest import ROOT

CONFIGS = {'bahdanau_translate': bahdanau_translate,
           'rnnencdec_translate': rnnencdec_translate}
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
  assert os.path.exists(os.path.join(workdir, 'translations_beam2.tsv'))
  assert os.listdir(os.path.join(workdir, 'alignments', 'test_step_4'))


def test_alignment_plots_of_translations_shorter_or_longer_than_gold(
    mha_run, tmp_path):
  config, workdir, _ = mha_run
  task, params, _ = train_lib.restore(config, workdir)
  split = task.data.test
  # The example whose gold target most exceeds its source: a short
  # translation of it needs room for the gold target in the batch.
  i = int(np.argmax([len(t) - len(s) for s, t in zip(split.src, split.tgt)]))
  assert len(split.tgt[i]) > len(split.src[i])
  for tgt_ids in ([np.zeros(0, np.int32)],
                  [np.concatenate([split.tgt[i]] * 3)]):
    images = task._plot_alignments(params, split, np.array([i]), tgt_ids,  # pylint: disable=protected-access
                                   str(tmp_path))
    assert len(images) == 1
    matrix = np.load(tmp_path / f'example{i}_layer0.npy')
    assert matrix.shape == (len(tgt_ids[0]) + 1, len(split.src[i]) + 1)


def test_eval_translates_given_sentences_and_plots_them(mha_run):
  _, workdir, _ = mha_run
  out = subprocess.run(
      [sys.executable, 'eval.py', '--config=configs/mha_translate.py:smoke',
       f'--workdir={workdir}', '--sentence=the cat walks',
       '--sentence=the dog'],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()[-2:]
  assert [line.split('\t')[0] for line in lines] == ['the cat walks',
                                                     'the dog']
  plots = os.listdir(os.path.join(workdir, 'alignments', 'sentences_step_4'))
  assert {'example0_layer0.png', 'example1_layer0.npy'} <= set(plots)


def test_translating_sentences_generates_no_toy_data(mha_run):
  """The toy vocabularies are the lexicon: eval.py --sentence (restore, then
  translate) never generates the corpus."""
  config, workdir, _ = mha_run
  task, params, step = train_lib.restore(config, workdir)
  out = task.translate(params, step, ['the cat walks'])
  assert len(out) == 1 and 'data' not in vars(task)  # never loaded
  # The same vocabularies the generated data is encoded with.
  assert task.src_vocab.words == task.data.src_vocab.words
  assert task.tgt_vocab.words == task.data.tgt_vocab.words


def test_decoding_logs_progress_with_an_eta(mha_run, monkeypatch, caplog):
  config, workdir, _ = mha_run
  monkeypatch.setattr(train_lib, 'PROGRESS_EVERY_S', 0)
  trainer = train_lib.Trainer(config, workdir)
  params = trainer.init_state()['params']
  total = trainer.task.num_examples('test')
  with caplog.at_level(logging.INFO):
    out = trainer.predictions(params, 'test')
  assert all(len(rows) == total for rows in out.values())
  lines = [r.getMessage() for r in caplog.records
           if r.getMessage().startswith('greedy on test: ')]
  assert lines and all(re.fullmatch(
      rf'greedy on test: \d+/{total} examples in \d+:\d\d:\d\d, ETA '
      r'(\d+:\d\d:\d\d|\.\.\.)', line) for line in lines)


def test_sentences_need_a_translation_config(mha_run):
  _, workdir, _ = mha_run
  out = subprocess.run(
      [sys.executable, 'eval.py', '--config=configs/mf_movies.py:smoke',
       f'--workdir={workdir}', '--sentence=the cat'],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      capture_output=True, text=True, timeout=600)
  assert out.returncode == 1
  assert ("error: --sentence needs a translation config; this one has task "
          "'movies'.") in out.stderr


@pytest.mark.parametrize('name', sorted(CONFIGS))
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
    task, params, _ = train_lib.restore(config, str(tmp_path))
    out = task.alignment_misses(params)
    assert out['name'] == 'alpha'
    scored, missed = sum(out['totals'].values()), sum(out['misses'].values())
    assert 0 < scored <= out['gold_links'] and 0 <= missed <= scored
    assert sum(out['offsets'].values()) == missed
    assert last_eval['aer'] == pytest.approx(
        1.0 - 2.0 * (scored - missed) / (scored + out['gold_links']),
        abs=1e-6)
  assert {'bleu', 'beam/bleu', 'exact_match', 'token_accuracy'} <= set(results)
