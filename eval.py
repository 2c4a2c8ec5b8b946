r"""Evaluates a checkpoint on the test split and writes eval_results.json.

  python eval.py --config=configs/mha_translate.py [--workdir=DIR] [--step=N]
  python eval.py --config=... --sentence="the cat walks on the street"

The logic lives in attention.training.train_lib and, for --sentence, in the
translate task; this file only parses flags.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from attention.training import cli
from attention.training import train_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config: configs/<experiment>.py[:<arg>].',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'The training workdir; default runs/<experiment>[_<arg>].')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default newest.')
_SENTENCE = flags.DEFINE_multi_string(
    'sentence', None, 'Translate this source sentence (repeatable) and plot '
    'its alignment into <workdir>/alignments/sentences_step_<N>/, instead of '
    'scoring the test split.')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  workdir = _WORKDIR.value or train_lib.default_workdir(
      config_flags.get_config_filename(flags.FLAGS['config']))
  print(f'workdir: {workdir}', flush=True)
  cli.quiet_library_logs()
  try:
    if _SENTENCE.value:
      if _CONFIG.value.task != 'translate':
        raise ValueError('--sentence needs a translation config; this one has '
                         f'task {_CONFIG.value.task!r}.')
      task, params, step = train_lib.restore(_CONFIG.value, workdir,
                                             _STEP.value)
      translations = task.translate(params, step, _SENTENCE.value)
      for source, target in zip(_SENTENCE.value, translations):
        print(f'{source}\t{target}')
      return
    results = train_lib.evaluate_checkpoint(_CONFIG.value, workdir, _STEP.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  print(train_lib.format_results(results))
  print(cli.after_evaluation(workdir, results['step']))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
