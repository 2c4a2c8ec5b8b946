"""Running on several processes, and surviving the cluster around them.

Three things the training loop needs beyond one process on one machine:

* :func:`initialize` joins a multi-process run (``jax.distributed``): with
  explicit ``coordinator_address`` / ``num_processes`` / ``process_id``, or
  where a cluster launcher (SLURM with several tasks, Open MPI, a TPU pod
  slice, a Kubernetes indexed job) announces one and JAX detects the rest. It
  fails within a timeout with a message that says what to check, instead of
  hanging, and checks that every process was given the same number of
  processes.
* :class:`WorkdirLock`: one training run per workdir. A second run pointed at
  a workdir in use refuses, naming the process that holds it. The lock is an
  ``flock`` on ``<workdir>/.lock``: the kernel drops it when its holder dies,
  so a killed run never leaves a stale lock behind.
* :class:`PreemptionWatcher`: SIGTERM (what SLURM, Kubernetes and cloud
  schedulers send before they preempt) asks the loop to stop after the current
  step, write a checkpoint and return. On several processes JAX's preemption
  sync manager makes every process stop at the same step, whichever of them
  got the signal.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
import signal
import socket
import sys
import threading
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

DEFAULT_TIMEOUT_S = 300


def _env_int(name: str, default: int = 1) -> int:
  try:
    return int(os.environ.get(name, '') or default)
  except ValueError:
    return default


def detected_cluster() -> str | None:
  """The launcher that announces a multi-process run here, or None.

  SLURM with more than one task, Open MPI with more than one rank,
  ``JAX_COORDINATOR_ADDRESS`` set, or a cluster JAX itself detects (TPU pod
  slices, Kubernetes). A single-task SLURM job stays single-process.
  """
  env = os.environ
  if 'SLURM_JOB_ID' in env and _env_int('SLURM_NTASKS') > 1:
    return 'SLURM'
  if _env_int('OMPI_COMM_WORLD_SIZE') > 1:
    return 'Open MPI'
  if 'JAX_COORDINATOR_ADDRESS' in env:
    return 'JAX_COORDINATOR_ADDRESS'
  if ',' in env.get('TPU_WORKER_HOSTNAMES', ''):
    return 'TPU pod'
  try:  # JAX's own detection of TPU VMs and Kubernetes jobs.
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    for cls in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
      name = cls.__name__
      if ('Tpu' in name or 'K8s' in name) and cls.is_env_present():
        return name
  except Exception:  # pylint: disable=broad-exception-caught
    pass  # A private API that moved: the checks above still hold.
  return None


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None, *,
               timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
  """Joins a multi-process run, if one is asked for; must precede any JAX work.

  With any argument given, all three are needed (on a cluster JAX detects,
  none is). Without arguments, joins only where :func:`detected_cluster` finds
  a launcher; a plain run stays single-process.

  Args:
    coordinator_address: 'host:port' of process 0, which listens there.
    num_processes: processes in the run.
    process_id: this process, in [0, num_processes).
    timeout_s: give up after this many seconds if the coordinator cannot be
      reached or not every process joins: print what to check and exit the
      process with status 1 (JAX itself would abort with a less helpful
      message, or wait).

  Returns:
    Whether a multi-process run was joined.

  Raises:
    ValueError: incomplete or invalid arguments, or processes that were given
      different numbers of processes.
  """
  explicit = {'--coordinator_address': coordinator_address,
              '--num_processes': num_processes, '--process_id': process_id}
  given = {k: v for k, v in explicit.items() if v is not None}
  if given and len(given) < 3:
    missing = sorted(set(explicit) - set(given))
    raise ValueError(
        f'A multi-process run needs --coordinator_address, --num_processes '
        f'and --process_id together; got {sorted(given)} but not {missing}. '
        'On SLURM, a TPU pod or Kubernetes give none: JAX detects them.')
  if timeout_s < 1:
    raise ValueError(f'--distributed_timeout_s must be >= 1, got {timeout_s}.')
  cluster = None
  if given:
    if num_processes < 1:
      raise ValueError(f'--num_processes must be >= 1, got {num_processes}.')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id must be in [0, {num_processes}) for '
                       f'--num_processes={num_processes}; got {process_id}.')
    host, _, port = coordinator_address.rpartition(':')
    if not host or not port.isdigit():
      raise ValueError('--coordinator_address must be host:port (the address '
                       'of process 0 and a free port there), got '
                       f'{coordinator_address!r}.')
  else:
    cluster = detected_cluster()
    if cluster is None:
      return False

  watchdog = threading.Timer(
      timeout_s, _give_up,
      args=(timeout_s, coordinator_address, num_processes, process_id,
            cluster))
  watchdog.daemon = True
  watchdog.start()
  try:
    # JAX's own deadline comes later, so that ours (with its message) fires.
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=timeout_s + 30)
  finally:
    watchdog.cancel()
  _check_same_num_processes(num_processes)
  if jax.process_index() != 0:
    # Progress lines come from process 0; warnings and errors from all.
    logging.set_verbosity(logging.WARNING)
  logging.info('Joined a run of %d processes (%s); %d devices, %d local.',
               jax.process_count(), cluster or coordinator_address,
               jax.device_count(), jax.local_device_count())
  return True


def _give_up(timeout_s, coordinator_address, num_processes, process_id,
             cluster):
  """The watchdog: jax.distributed.initialize did not return in time."""
  if coordinator_address:
    host, _, port = coordinator_address.rpartition(':')
    try:
      with socket.create_connection((host, int(port)), timeout=2):
        reachable = True
    except OSError:
      reachable = False
    if process_id == 0:
      why = (f'process 0 listened on {coordinator_address} but not all '
             f'{num_processes} processes (--num_processes) joined within '
             f'{timeout_s} s. Were all of them started, with the same '
             '--num_processes and --coordinator_address?')
    elif reachable:
      why = (f'process {process_id} reached the coordinator at '
             f'{coordinator_address} but the run did not assemble within '
             f'{timeout_s} s. Were all {num_processes} processes started with '
             'the same --num_processes and distinct --process_id?')
    else:
      why = (f'process {process_id} could not reach the coordinator at '
             f'{coordinator_address} within {timeout_s} s: nothing listens '
             'there. Start process 0 (it listens on that port) and check the '
             'host name, the port and the firewall.')
  else:
    why = (f'the {cluster} run did not assemble within {timeout_s} s (JAX '
           'detected the coordinator and the process count).')
  sys.stderr.write(f'error: could not join the multi-process run: {why} '
                   '(--distributed_timeout_s sets this limit.)\n')
  sys.stderr.flush()
  os._exit(1)  # pylint: disable=protected-access


def _check_same_num_processes(num_processes: int | None) -> None:
  """Every process was told the same --num_processes (JAX does not check)."""
  mine = jax.process_count() if num_processes is None else num_processes
  told = np.asarray(multihost_utils.process_allgather(np.int32(mine)))
  if np.any(told != told[0]) or told[0] != jax.process_count():
    per_process = ', '.join(f'process {i}: {int(n)}'
                            for i, n in enumerate(told.reshape(-1)))
    raise ValueError(
        f'The processes disagree on --num_processes ({per_process}); the '
        f'coordinator formed a run of {jax.process_count()}. Give every '
        'process the same --num_processes.')


class WorkdirLock:
  """Holds ``<workdir>/.lock`` while a run trains there (a context manager).

  On several processes process 0 takes the lock for the whole run (all of
  them write under its workdir) and tells the others whether it got it, so
  all of them fail together. The lock file holds the holder's pid, host and
  start time, for the refusal message.

  Raises (on entry):
    ValueError: another run holds the workdir.
  """

  NAME = '.lock'

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, self.NAME)
    self._fd = None

  def __enter__(self) -> WorkdirLock:
    holder = None
    if jax.process_index() == 0:
      holder = self._acquire()
    if jax.process_count() > 1:
      got = multihost_utils.broadcast_one_to_all(np.int32(holder is None))
      if not int(got) and holder is None:
        holder = 'another run (see the error of process 0)'
    if holder is not None:
      self._release()
      raise ValueError(
          f'The workdir {self.workdir} is in use by another training run '
          f'({holder}); two runs writing one workdir would overwrite each '
          "other's checkpoints. Wait for it to finish, stop it, or pass "
          'another --workdir.')
    return self

  def __exit__(self, *exc) -> None:
    self._release()

  def _acquire(self) -> str | None:
    """Takes the lock; returns None, or who holds it."""
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
        os.close(fd)
        raise
      with os.fdopen(fd) as f:
        text = f.read().strip()
      return text or 'a process that has not written its name yet'
    os.ftruncate(fd, 0)
    started = datetime.datetime.now().isoformat(timespec='seconds')
    os.write(fd, (f'pid {os.getpid()} on host {socket.gethostname()}, '
                  f'started {started}\n').encode())
    self._fd = fd
    return None

  def _release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


class PreemptionWatcher:
  """Turns SIGTERM into "stop after this call" (a context manager).

  Single process: a SIGTERM handler (installed on entry, the previous one put
  back on exit) sets a flag. Several processes: JAX's preemption sync manager
  (it owns SIGTERM there) makes all processes agree on the step to stop at.
  Call :meth:`should_stop` at every point where the loop may stop (after a
  call of one or more steps), on every process, with ids that grow by one.
  """

  def __init__(self):
    self._requested = False
    self._previous: Any = None
    self._installed = False
    self._synced = False

  def __enter__(self) -> PreemptionWatcher:
    try:  # A private API: whether JAX's preemption sync manager runs.
      from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
      state = jax_distributed.global_state
      self._synced = (state.client is not None
                      and state.preemption_sync_manager is not None)
    except (ImportError, AttributeError):
      self._synced = False  # Moved: then the flag below, per process.
    if not self._synced and (
        threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
    self._requested = True
    # No logging here: a handler may interrupt a logging call.
    os.write(2, b'SIGTERM: finishing this call, then a checkpoint and exit.\n')

  def should_stop(self, check: int) -> bool:
    """Whether to checkpoint and stop here (the same on every process).

    ``check``: 1, 2, 3, ... at the loop's successive stopping points (JAX's
    sync point is the first id after the largest any process has reached).
    """
    if self._synced:
      return multihost_utils.reached_preemption_sync_point(check)
    return self._requested
