"""Test setup: CPU, and silent broadcasting bugs turned into errors."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_numpy_rank_promotion', 'raise')

# Compiled programs are shared by every test (and the subprocesses they
# start): the smoke runs compile the same steps again and again.
import tempfile  # pylint: disable=g-import-not-at-top,g-bad-import-order

_CACHE = os.path.join(tempfile.gettempdir(), 'attention-test-jax-cache')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

import json  # pylint: disable=g-import-not-at-top,g-bad-import-order

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from attention.models import rnnencdec  # pylint: disable=g-import-not-at-top
from attention.models import rnnsearch  # pylint: disable=g-import-not-at-top
from attention.models import transformer  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Tiny translation models for the model and decoding tests: a source batch
# (ids 0 = padding, 2 = end), a teacher-forcing target, and each model as a
# function of its target vocabulary size.
SRC = np.array([[5, 6, 7, 8, 2, 0], [9, 4, 2, 0, 0, 0]], np.int32)
TGT_IN = np.array([[1, 5, 6, 7, 8], [1, 9, 9, 4, 2]], np.int32)
TINY_MODELS = {
    'transformer': lambda v: transformer.Model(
        src_vocab_size=12, tgt_vocab_size=v, num_layers=2, d_model=16,
        num_heads=4, num_kv_heads=2, mlp_dim=32, dropout_rate=0.0),
    'transformer_learned_untied': lambda v: transformer.Model(
        src_vocab_size=12, tgt_vocab_size=v, num_layers=1, d_model=16,
        num_heads=2, mlp_dim=32, position='learned', max_length=8,
        tie_embeddings=False),
    'transformer_rope': lambda v: transformer.Model(
        src_vocab_size=12, tgt_vocab_size=v, num_layers=1, d_model=16,
        num_heads=2, mlp_dim=32, position='rope'),
    'rnnsearch': lambda v: rnnsearch.Model(
        src_vocab_size=12, tgt_vocab_size=v, embed_dim=8, hidden_dim=16,
        attention_dim=8, readout_dim=8),
    'rnnsearch_luong_shallow': lambda v: rnnsearch.Model(
        src_vocab_size=12, tgt_vocab_size=v, embed_dim=8, hidden_dim=16,
        score='multiplicative', deep_output=False),
    'rnnsearch_conditional': lambda v: rnnsearch.Model(
        src_vocab_size=12, tgt_vocab_size=v, embed_dim=8, hidden_dim=16,
        attention_dim=8, readout_dim=8, query='conditional'),
    'rnnencdec': lambda v: rnnencdec.Model(
        src_vocab_size=12, tgt_vocab_size=v, embed_dim=8, hidden_dim=16,
        readout_dim=8),
}


def tiny_model(name, vocab=10):
  """TINY_MODELS[name] and its variables, initialised on SRC, TGT_IN."""
  model = TINY_MODELS[name](vocab)
  return model, model.init(jax.random.key(0), SRC, TGT_IN)


def read_metrics(workdir):
  """The rows of <workdir>/metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='session')
def mha_run(tmp_path_factory):
  """configs/mha_translate.py:smoke trained for its 4 steps (checkpoints at
  2 and 4); shared by the loop's tests and the translate task's."""
  from attention.training import train_lib  # pylint: disable=g-import-not-at-top
  from configs import mha_translate  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('mha'))
  config = mha_translate.get_config('smoke')
  last_eval = train_lib.train_and_evaluate(config, workdir)
  return config, workdir, last_eval
