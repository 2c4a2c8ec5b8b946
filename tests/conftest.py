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
