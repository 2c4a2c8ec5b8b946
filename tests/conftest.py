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

import pytest  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
