r"""Trains an experiment.

  python train.py --config=configs/mha_translate.py [--workdir=DIR] \
      [--config.<key>=<value> ...] [--sweep_index=i]

One process per host of a multi-process run: SLURM (several tasks), a TPU pod
slice or a Kubernetes indexed job are detected; elsewhere pass
--coordinator_address=HOST:PORT --num_processes=N --process_id=I to each.
SIGTERM stops after the current call (at most config.steps_per_call steps)
with a checkpoint (exit status 0); the same command resumes. Resuming with a
config that changes the experiment is refused (it lists the changes) unless
--allow_config_change.

The logic lives in attention.training.train_lib; this file only parses flags.
"""

import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from attention.training import cli
from attention.training import sweep
from attention.training import train_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config: configs/<experiment>.py[:<arg>].',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where checkpoints, metrics and plots go; default '
    'runs/<experiment>[_<arg>].')
_SWEEP_INDEX = flags.DEFINE_integer(
    'sweep_index', None, "Run point i of the config's sweep into "
    '<workdir>/<i>-<overrides>.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for a multi-process '
    'run not started by SLURM / a TPU pod / Kubernetes (JAX detects those).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process in a multi-process run.')
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    'distributed_timeout_s', 300, 'Multi-process runs: give up (exit 1, '
    'saying what to check) when the coordinator cannot be reached or not all '
    'processes joined within this many seconds.')
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False, 'Resume a run whose checkpoint was written '
    'by another config (a changed model, data, seed, optimizer or batch); '
    'the change is recorded in <workdir>/config.<step>.json.')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  workdir = _WORKDIR.value or train_lib.default_workdir(
      config_flags.get_config_filename(flags.FLAGS['config']))
  cli.quiet_library_logs()
  try:
    train_lib.initialize_distributed(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
        timeout_s=_DISTRIBUTED_TIMEOUT.value)
    if _SWEEP_INDEX.value is not None:
      config, workdir = sweep.sweep_point(config, workdir, _SWEEP_INDEX.value)
    print(f'workdir: {workdir}', flush=True)
    train_lib.train_and_evaluate(
        config, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    sys.exit(f'error: {e}')
  if jax.process_index() == 0:
    flag = flags.FLAGS['config']
    print(cli.after_training(config_flags.get_config_filename(flag),
                             config_flags.get_override_values(flag), workdir),
          flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
