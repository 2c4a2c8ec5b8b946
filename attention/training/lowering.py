"""A config's compiled steps, lowered for CUDA or TPU from any machine.

:func:`lower` traces every function the loop compiles (the train step, the
task's ``eval_step`` and each of its predictors, e.g. greedy and beam
decoding) the way :class:`~attention.training.train_lib.Trainer` builds them,
on an abstract mesh of ``num_devices`` devices over the 'data' axis, with
``implementation=None`` resolving as on the target platform, and lowers each
to StableHLO for that platform. No accelerator is needed, so a
platform-specific failure shows up here (and in CI) rather than on a cluster:

  lowered = lowering.lower(config, 'tpu')
  lowered['train_step'].as_text()

Lowering is not compiling: XLA's backend passes for the platform do not run.
One exception to the abstract mesh: jax.nn's cuDNN attention lowers only with
real devices (jax 0.10), so a step where dispatch chose cuDNN is lowered on
one local device instead, and its ``Lowered.mesh`` says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import tempfile
from typing import Any

import jax
from jax.sharding import AbstractMesh
from jax.sharding import AxisType
import ml_collections

from attention import dot_product
from attention import pallas as pallas_lib
from attention.training import train_lib

# jax's lowering platform name -> the attention dispatch platform.
PLATFORMS = {'cuda': 'gpu', 'tpu': 'tpu', 'cpu': 'cpu'}
# What a lowered module contains when a kernel ran (custom-call targets).
KERNEL_MARKERS = {
    'cudnn': ('__cudnn$fmha',),
    'pallas/gpu': pallas_lib.hlo_markers('gpu'),
    'pallas/tpu': pallas_lib.hlo_markers('tpu'),
}


@dataclasses.dataclass
class Lowered:
  """One lowered step: its module and what attention resolved to in it."""
  lowered: Any  # jax.stages.Lowered
  implementations: list[str]
  mesh: str  # what it was lowered on

  def as_text(self) -> str:
    return self.lowered.as_text()

  def custom_calls(self) -> set[str]:
    return set(re.findall(r'custom_call @([\w$.]+)', self.as_text()))


def expected_markers(platform: str, implementations) -> set[str]:
  """Custom-call substrings the module must hold for these implementations."""
  markers = set()
  for implementation in set(implementations):
    if implementation == 'cudnn':
      markers.update(KERNEL_MARKERS['cudnn'])
    elif implementation == 'pallas':
      markers.update(KERNEL_MARKERS[f'pallas/{PLATFORMS[platform]}'])
  return markers


def lower(config: ml_collections.ConfigDict, platforms=('cuda', 'tpu'), *,
          num_devices: int = 8, assume_cudnn: int | None = None,
          workdir: str | None = None) -> dict[str, dict[str, Lowered]]:
  """{platform: {step: Lowered}}, steps 'train_step', 'eval_step' and each
  predictor of the task; with config.steps_per_call K > 1 also
  'train_steps', the K-step scan the loop runs.

  Args:
    config: an experiment config (its data is read or generated, to get the
      batch shapes).
    platforms: jax lowering platforms: 'cuda', 'tpu' (or 'cpu').
    num_devices: size of the abstract 'data' mesh; the global batch must
      divide by it, as on a real one.
    assume_cudnn: a cuDNN version (e.g. 90100) to assume when lowering for
      'cuda' on a machine without one: jax.nn's cuDNN attention asks the
      installed library for its version while tracing. None: ask it (which
      fails off a GPU wherever dispatch chooses cuDNN).
    workdir: the task's workdir (default: a temporary directory).
  """
  platforms = (platforms,) if isinstance(platforms, str) else tuple(platforms)
  for platform in platforms:
    if platform not in PLATFORMS:
      raise ValueError(f'lower: unknown platform {platform!r}; valid: '
                       f'{tuple(PLATFORMS)}.')
  mesh = AbstractMesh((num_devices,), ('data',),
                      axis_types=(AxisType.Auto,))
  with contextlib.ExitStack() as stack:
    if workdir is None:
      workdir = stack.enter_context(tempfile.TemporaryDirectory())
    if assume_cudnn is not None:
      stack.enter_context(_assumed_cudnn(assume_cudnn))
    trainer = train_lib.Trainer(config, workdir, mesh=mesh)
    steps = _steps(trainer)
    out, need_devices = {}, []
    for platform in platforms:
      out[platform] = {}
      for name in steps:
        try:
          out[platform][name] = _trace_and_lower(trainer, steps, name,
                                                 platform)
        except ValueError as e:
          if 'require devices to be present' not in str(e):
            raise
          need_devices.append((platform, name))
    if need_devices:
      # jax.nn's cuDNN attention (a custom_partitioning op) lowers only with
      # real devices: those steps are lowered on one local device instead.
      one = jax.make_mesh((1,), ('data',), axis_types=(AxisType.Auto,),
                          devices=jax.local_devices()[:1])
      trainer = train_lib.Trainer(config, workdir, mesh=one)
      steps = _steps(trainer)
      for platform, name in need_devices:
        out[platform][name] = _trace_and_lower(trainer, steps, name, platform)
        out[platform][name].mesh = ONE_DEVICE
  return out


ONE_DEVICE = ('1 local device: this JAX lowers cuDNN attention only with real '
              'devices')


def _steps(trainer):
  """{name: (uncompiled fn, abstract args)} of every step the loop compiles."""
  task = trainer.task
  state = trainer.abstract_state()
  params = state['params']
  rng = jax.eval_shape(lambda: trainer.dropout_rng)
  train_batch = _abstract_batch(trainer, next(iter(task.train_batches())))
  eval_batch = _abstract_batch(trainer,
                               next(iter(task.eval_batches('validation'))))
  steps = {'train_step': (trainer.train_step_fn, (state, train_batch, rng)),
           'eval_step': (task.eval_step, (params, eval_batch))}
  per_call = int(trainer.config.get('steps_per_call', 1))
  if per_call > 1:
    stacked = {k: jax.ShapeDtypeStruct((per_call, *v.shape), v.dtype,
                                       sharding=trainer.stacked_sharding)
               for k, v in train_batch.items()}
    steps['train_steps'] = (trainer.train_steps_fn, (state, stacked, rng))
  for name, fn in task.predictors().items():
    steps[name] = (fn, (params, eval_batch))
  return steps


def _trace_and_lower(trainer, steps, name, platform):
  fn, args = steps[name]
  # A new function object per platform: JAX reuses a function's traces (even
  # under a new jax.jit), and attention dispatch happens while tracing.
  fn = functools.partial(fn)
  jitted = (trainer.jit_train_step(fn) if name.startswith('train_step')
            else jax.jit(fn))
  with dot_product.target_platform(PLATFORMS[platform]) as chosen:
    traced = jitted.trace(*args)
  return Lowered(_lower(traced, platform), list(chosen),
                 f'abstract, {trainer.mesh.size} devices over \'data\'')


def _lower(traced, platform):
  """``traced.lower(lowering_platforms=...)``, or a clear error without it."""
  try:
    return traced.lower(lowering_platforms=(platform,))
  except TypeError as e:
    if 'lowering_platforms' not in str(e):
      raise
    raise RuntimeError(
        f'lower: this JAX ({jax.__version__}) has no '
        f'Traced.lower(lowering_platforms=...), which cross-platform '
        f'lowering needs (jax 0.10 has it): {e}') from e


def _abstract_batch(trainer, host_batch):
  """Shapes of a global batch, sharded over 'data' as the loop shards it."""
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                  sharding=trainer.batch_sharding)
          for k, v in host_batch.items()}


@contextlib.contextmanager
def _assumed_cudnn(version: int):
  """Make jax.nn's cuDNN attention trace as if cuDNN ``version`` were here.

  It reads the version (and the GPU's compute capability) from private JAX
  functions while tracing; these are replaced for the duration.
  """
  try:
    from jax._src.cudnn import fused_attention_stablehlo as fused  # pylint: disable=g-import-not-at-top
    saved = (fused.check_cudnn_version, fused.check_compute_capability)
  except (ImportError, AttributeError) as e:
    raise RuntimeError(
        f'lower(assume_cudnn=...) relies on jax._src.cudnn.'
        f'fused_attention_stablehlo.check_cudnn_version, which this JAX '
        f'({jax.__version__}) does not have: {e}. Lower on a GPU machine, '
        f'or with assume_cudnn=None and a config that does not use cuDNN.'
    ) from e
  fused.check_cudnn_version = lambda: version
  fused.check_compute_capability = lambda capability: True
  try:
    yield
  finally:
    fused.check_cudnn_version, fused.check_compute_capability = saved
