"""Several processes for real: 2 processes x 2 CPU devices against 1 x 4, the
multi-process resume, preemption (SIGTERM), the workdir lock and bad input.

Every run here is a train.py subprocess on 127.0.0.1 with forced CPU devices;
multi-process CPU collectives go through gloo (JAX's default for CPU).
"""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from attention.training import checkpoints
from attention.training import distributed
from attention.training import train_lib
from configs import mha_translate
from conftest import read_metrics
from conftest import ROOT
SMOKE = 'configs/mha_translate.py:smoke'
# No evaluation before the last step: these tests are about training.
QUIET = ['--config.eval_every_steps=1000']
# Two steps per compiled call (the checkpoint interval of :smoke): batches
# stacked [2, B, ...] and split over the mesh by process.
SCAN = '--config.steps_per_call=2'


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def env_with(devices: int) -> dict[str, str]:
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def train_cmd(workdir, *flags):
  return [sys.executable, 'train.py', f'--config={SMOKE}',
          f'--workdir={workdir}', *QUIET, *flags]


def run_processes(workdir, num_processes, devices_each, *flags,
                  timeout=300):
  """train.py as ``num_processes`` processes of one run; their results."""
  port = free_port()
  procs = [subprocess.Popen(
      train_cmd(workdir, f'--coordinator_address=127.0.0.1:{port}',
                f'--num_processes={num_processes}', f'--process_id={i}',
                '--distributed_timeout_s=120', *flags),
      cwd=ROOT, env=env_with(devices_each), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(num_processes)]
  results = []
  for proc in procs:
    try:
      out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise
    results.append((proc.returncode, out, err))
  return results


def final_params(workdir):
  config = mha_translate.get_config('smoke')
  _, params, step = train_lib.restore(config, workdir)
  return jax.tree_util.tree_flatten_with_path(params)[0], step


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory):
  """The smoke config (4 steps) as 2 processes x 2 devices."""
  workdir = str(tmp_path_factory.mktemp('two_processes'))
  results = run_processes(workdir, 2, 2, SCAN)
  for rc, _, err in results:
    assert rc == 0, err[-3000:]
  return workdir, results


def test_two_processes_equal_one_process_with_four_devices(two_process_run,
                                                           tmp_path):
  workdir, results = two_process_run
  got, step = final_params(workdir)
  assert step == 4
  assert '4 devices, global batch 16' in results[0][2]
  # 1 process, 4 devices, the same (gloo) collectives: bit for bit.
  gloo = str(tmp_path / 'one_process_gloo')
  [(rc, _, err)] = run_processes(gloo, 1, 4, SCAN)
  assert rc == 0, err[-3000:]
  want, _ = final_params(gloo)
  for (path, a), (_, b) in zip(got, want):
    assert np.array_equal(a, b), jax.tree_util.keystr(path)
  # 1 process, 4 devices, no jax.distributed: XLA's in-process all-reduce
  # sums the 4 gradient shards in another order than gloo's ring, so floats
  # differ in the last bits. Every parameter agrees to ~1 ulp except the
  # attention key biases: their true gradient is exactly 0 (softmax ignores
  # a shift shared by all keys), so Adam turns rounding noise into
  # learning-rate-sized steps.
  plain = str(tmp_path / 'one_process')
  out = subprocess.run(train_cmd(plain, SCAN), cwd=ROOT, env=env_with(4),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  want, _ = final_params(plain)
  for (path, a), (_, b) in zip(got, want):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" not in name:
      np.testing.assert_allclose(a, b, rtol=0, atol=2e-7, err_msg=name)


def test_only_process_0_writes_logs_and_both_write_checkpoints(
    two_process_run):
  workdir, results = two_process_run
  steps = [r['step'] for r in read_metrics(workdir) if 'train/loss' in r]
  assert steps == [2, 4]  # one writer: no line twice
  events = [n for n in os.listdir(workdir) if n.startswith('events.out')]
  assert len(events) == 1
  assert os.listdir(os.path.join(workdir, 'alignments', 'step_4'))
  assert 'step 4/4' in results[0][2] and 'step 4/4' not in results[1][2]
  # The data iterator state of each process is in every checkpoint.
  data = os.path.join(workdir, 'checkpoints', '4', 'data')
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(
      os.listdir(data))


def test_two_processes_resume_from_a_checkpoint(two_process_run, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir, _ = two_process_run
  want, _ = final_params(workdir)
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '4'))
  results = run_processes(resumed, 2, 2, SCAN)
  for rc, _, err in results:
    assert rc == 0, err[-3000:]
  assert 'Resuming from checkpoint step 2' in results[0][2]
  got, step = final_params(resumed)
  assert step == 4
  for (path, a), (_, b) in zip(got, want):
    assert np.array_equal(a, b), jax.tree_util.keystr(path)


def _wait_for(proc, text, timeout=120):
  """Reads ``proc``'s stderr until a line holds ``text``; returns the lines."""
  lines = []
  deadline = time.time() + timeout
  for line in proc.stderr:
    lines.append(line)
    if text in line:
      return lines
    if time.time() > deadline:
      break
  raise AssertionError(f'{text!r} never appeared:\n' + ''.join(lines[-30:]))


def test_sigterm_checkpoints_and_exits_0_and_a_second_run_is_refused(
    tmp_path):
  workdir = str(tmp_path)
  # Calls of 8 steps and of 1 over 2 batch shapes in runs of 12: a stop
  # may come with a batch read ahead, which the checkpoint must not count.
  flags = ['--config.num_train_steps=300', '--config.log_every_steps=1',
           '--config.checkpoint_every_steps=1000', '--config.steps_per_call=8',
           '--config.data.num_buckets=2', '--config.data.bucket_run=12']
  first = subprocess.Popen(train_cmd(workdir, *flags), cwd=ROOT,
                           env=env_with(1), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(first, 'step 5/300')
    first.send_signal(signal.SIGSTOP)  # holds the lock, frozen mid-run
    second = subprocess.run(train_cmd(workdir, *flags), cwd=ROOT,
                            env=env_with(1), capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 1
    assert (f'The workdir {workdir} is in use by another training run (pid '
            f'{first.pid} on host {socket.gethostname()}') in second.stderr
    first.send_signal(signal.SIGTERM)
    sent = time.time()
    first.send_signal(signal.SIGCONT)
    rest = first.stderr.read()
    assert first.wait(timeout=60) == 0, rest[-3000:]
    assert time.time() - sent < 30  # the step, a checkpoint, exit
  finally:
    first.kill()
  stopped = int(rest.split('Preempted (SIGTERM) at step ')[1].split('/')[0])
  assert 5 <= stopped < 300
  assert checkpoints.committed_steps(workdir) == [stopped]
  # The next launch resumes there and finishes.
  again = subprocess.run(train_cmd(workdir, *flags), cwd=ROOT,
                         env=env_with(1), capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f'Resuming from checkpoint step {stopped}' in again.stderr
  assert checkpoints.committed_steps(workdir)[-1] == 300
  steps = [r['step'] for r in read_metrics(workdir) if 'train/loss' in r]
  assert steps == list(range(1, 301))


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  workdir = str(tmp_path)
  port = free_port()
  flags = ['--config.num_train_steps=400', '--config.log_every_steps=3',
           '--config.checkpoint_every_steps=1000', '--num_processes=2',
           f'--coordinator_address=127.0.0.1:{port}',
           '--distributed_timeout_s=120']
  procs = [subprocess.Popen(train_cmd(workdir, *flags, f'--process_id={i}'),
                            cwd=ROOT, env=env_with(2),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    _wait_for(procs[0], 'step 3/400')
    procs[1].send_signal(signal.SIGTERM)  # the notice reaches one host
    errs = [p.communicate(timeout=120)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], errs[1][-2000:]
  stops = {int(e.split('Preempted (SIGTERM) at step ')[1].split('/')[0])
           for e in errs}
  assert len(stops) == 1  # both processes stopped at the same step
  stop = stops.pop()
  assert checkpoints.committed_steps(workdir) == [stop]
  # The stop step's training metrics are logged, on a log step or not.
  logged = [r['step'] for r in read_metrics(workdir) if 'train/loss' in r]
  assert logged[-1] == stop and logged[:-1] == list(range(3, stop, 3))


def test_unreachable_coordinator_fails_within_the_timeout(tmp_path):
  start = time.time()
  out = subprocess.run(
      train_cmd(tmp_path, f'--coordinator_address=127.0.0.1:{free_port()}',
                '--num_processes=2', '--process_id=1',
                '--distributed_timeout_s=3'),
      cwd=ROOT, env=env_with(1), capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert time.time() - start < 60
  assert ('process 1 could not reach the coordinator at 127.0.0.1:'
          in out.stderr), out.stderr[-2000:]
  assert '--distributed_timeout_s' in out.stderr


def run_two_processes(tmp_path, num_processes, timeout_s):
  """Processes 0 and 1, each told its own --num_processes: (codes, stderrs)."""
  port = free_port()
  procs = [subprocess.Popen(
      train_cmd(tmp_path, f'--coordinator_address=127.0.0.1:{port}',
                f'--num_processes={n}', f'--process_id={i}',
                f'--distributed_timeout_s={timeout_s}'),
      cwd=ROOT, env=env_with(1), stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
           for i, n in enumerate(num_processes)]
  errs = [p.communicate(timeout=120)[1] for p in procs]
  return [p.returncode for p in procs], errs


def test_processes_missing_from_the_run_fail_within_the_timeout(tmp_path):
  """Process 0 told 3 processes, only 2 come: nobody waits forever."""
  codes, errs = run_two_processes(tmp_path, num_processes=(3, 2),
                                  timeout_s=3)
  assert codes == [1, 1]
  assert 'not all 3 processes (--num_processes) joined within 3 s' in errs[0]
  assert ('process 1 reached the coordinator' in errs[1]
          or 'could not reach' in errs[1]), errs[1][-2000:]


def test_mismatched_num_processes_is_a_clear_error(tmp_path):
  """Process 1 told 3 processes, the run has 2: both say so and exit."""
  codes, errs = run_two_processes(tmp_path, num_processes=(2, 3),
                                  timeout_s=60)
  assert codes == [1, 1]
  for err in errs:
    assert ('The processes disagree on --num_processes (process 0: 2, '
            'process 1: 3)') in err, err[-2000:]


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_processes=2), 'needs --coordinator_address, --num_processes and '
     r"--process_id together; got \['--num_processes'\]"),
    (dict(coordinator_address='127.0.0.1:1', num_processes=2, process_id=2),
     r'--process_id must be in \[0, 2\)'),
    (dict(coordinator_address='localhost', num_processes=2, process_id=0),
     'must be host:port'),
])
def test_incomplete_distributed_flags_are_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    distributed.initialize(**kwargs)


def test_a_plain_run_stays_single_process(monkeypatch):
  for name in ('SLURM_JOB_ID', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE',
               'JAX_COORDINATOR_ADDRESS', 'TPU_WORKER_HOSTNAMES'):
    monkeypatch.delenv(name, raising=False)
  assert distributed.detected_cluster() is None
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert distributed.detected_cluster() is None  # one task: one process
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.detected_cluster() == 'SLURM'


def test_workdir_lock_in_one_process(tmp_path):
  with distributed.WorkdirLock(str(tmp_path)):
    with pytest.raises(ValueError, match=rf'in use by another training run '
                       rf'\(pid {os.getpid()} on host'):
      train_lib.train_and_evaluate(mha_translate.get_config('smoke'),
                                   str(tmp_path))
  # Released on exit: the lock file stays, the lock does not.
  with distributed.WorkdirLock(str(tmp_path)):
    pass
