"""What the entry points (train.py, eval.py) say: flags, logs, next steps.

``app.run(main, flags_parser=cli.parse_flags)``: every flag mistake is one
line (absl's "FATAL Flags parsing error: ...") and exit status 1, before
main runs and before anything is written.
"""

from __future__ import annotations

import importlib.util
import logging as py_logging
import os
import re
import sys
from typing import Any

from absl import flags

from attention.training import sweep


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags parser for train.py and eval.py (``app.run(main, flags_parser=...)``).

  A flags error exits 1 with absl's one-line message. A ``--config.<key>``
  that names no key of the config says which part is unknown and lists the
  valid keys there, instead of ml_collections' traceback.
  """
  try:
    rest = flags.FLAGS(argv)
    if 'config' in flags.FLAGS:
      try:  # a file that failed to load only raises when first read
        'task' in flags.FLAGS['config'].value  # pylint: disable=pointless-statement
      except OSError as e:
        raise flags.Error(f'--config: cannot load {_config_file(argv)!r}: '
                          f'{str(e).splitlines()[-1].strip()}') from e
    return rest
  except (flags.Error, AttributeError, KeyError) as e:
    # The config file's own errors (e.g. an unknown :<arg>) arrive wrapped
    # in a traceback; their last line says what is wrong.
    last = [line for line in str(e).splitlines() if line.strip()][-1]
    message = _unknown_config_key(argv) or re.sub(r'^\w+Error: ', '',
                                                   last.strip())
  sys.stderr.write(f'FATAL Flags parsing error: {message}\n'
                   '  Pass --helpshort or --helpfull to see help on flags.\n')
  sys.exit(1)


def _config_file(argv: list[str]) -> str | None:
  """The value of the last --config=... in ``argv``."""
  files = [a.partition('=')[2] for a in argv if a.startswith('--config=')]
  return files[-1] if files else None


def _unknown_config_key(argv: list[str]) -> str | None:
  """What is wrong with the first --config.<key> that is not in the config."""
  if not _config_file(argv):
    return None
  # The file's own get_config, not sweep.load_config: ml_collections' config
  # flag reads the --config.<key> overrides from sys.argv too, and one of
  # them is what failed.
  path, _, arg = _config_file(argv).partition(':')
  spec = importlib.util.spec_from_file_location('_config_file', path)
  if spec is None or not os.path.isfile(path):
    return None
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
  except Exception:  # pylint: disable=broad-except
    return None  # the file itself is wrong: flags reports that
  for flag in argv:
    if flag.startswith('--config.'):
      key = flag[len('--config.'):].partition('=')[0]
      problem = sweep.unknown_key(config, key)
      if problem:
        return f'--config.{key}: {problem}.'
  return None


def after_training(config_arg: str, overrides: dict[str, Any],
                   workdir: str) -> str:
  """What train.py prints at the end: the commands to run next (eval.py with
  the same --config.<key> overrides, so that it builds the same model)."""
  flags_ = ''.join(f' --config.{k}={v}' for k, v in sorted(overrides.items()))
  return (f'Trained into {workdir}. Next:\n'
          f'  python eval.py --config={config_arg}{flags_} '
          f'--workdir={workdir}\n'
          f'  tensorboard --logdir={workdir}')


def after_evaluation(workdir: str, step: int) -> str:
  """What eval.py prints at the end: where its outputs went."""
  lines = [f'Results: {os.path.join(workdir, "eval_results.json")}']
  plots = os.path.join(workdir, 'alignments', f'test_step_{step}')
  if os.path.isdir(plots):
    lines.append(f'Plots: {plots}{os.sep}')
  tables = sorted(n for n in os.listdir(workdir)
                  if n.startswith('translations_') and n.endswith('.tsv'))
  if tables:
    lines.append('Translations: ' + ', '.join(
        os.path.join(workdir, n) for n in tables))
  return '\n'.join(lines)


class _QuietLibraries(py_logging.Filter):
  """Drops Orbax's per-save info and warnings (errors still show), and JAX's
  note that it found no TPU library on a machine without one (a TPU that
  fails to start still shows)."""

  def filter(self, record):
    if record.levelno >= py_logging.ERROR:
      return True
    if f'{os.sep}orbax{os.sep}' in record.pathname:
      return False
    message = record.getMessage()
    return not ("Unable to initialize backend 'tpu'" in message
                and 'libtpu.so: cannot open shared object file' in message)


def quiet_library_logs() -> None:
  """Installs _QuietLibraries (before the first JAX device call)."""
  for name in ('absl', 'jax._src.xla_bridge'):
    logger = py_logging.getLogger(name)
    if not any(isinstance(f, _QuietLibraries) for f in logger.filters):
      logger.addFilter(_QuietLibraries())
