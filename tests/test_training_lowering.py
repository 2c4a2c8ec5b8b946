"""Every config's train, eval and decode steps lower for CUDA and TPU, here
(the train step alone and scanned config.steps_per_call times).

On an abstract mesh of 8 devices over 'data', float32 and bfloat16, with
``implementation=None`` resolving as on each platform; where dispatch chose a
kernel (cuDNN, Triton, splash) its custom call must be in the module.
"""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from attention import dot_product
from attention import dot_product_attention
from attention.training import lowering
from attention.training import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if not os.path.basename(p).startswith(('_', 'common')))
CUDNN = 90100  # cuDNN 9.1, assumed: this machine has none (see lower())


def test_every_config_is_covered():
  assert len(CONFIGS) == 6, CONFIGS


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('name', CONFIGS)
def test_steps_lower_for_cuda_and_tpu(name, dtype):
  config = sweep.load_config(os.path.join(ROOT, 'configs', f'{name}.py:smoke'))
  config.dtype = dtype
  out = lowering.lower(config, ('cuda', 'tpu'), assume_cudnn=CUDNN)
  for platform, steps in out.items():
    assert {'train_step', 'train_steps', 'eval_step'} <= set(steps)
    for step, lowered in steps.items():
      text = lowered.as_text()
      if lowered.mesh == lowering.ONE_DEVICE:  # cuDNN needs real devices
        assert platform == 'cuda' and 'cudnn' in lowered.implementations
      else:
        assert 'mhlo.num_partitions = 8' in text, (name, platform, step)
      for marker in lowering.expected_markers(platform,
                                              lowered.implementations):
        assert marker in text, (name, platform, step, marker)
      if not {'cudnn', 'pallas'} & set(lowered.implementations):
        assert not lowered.custom_calls() & {
            '__cudnn$fmhaSoftmax', '__gpu$xla.gpu.triton', 'tpu_custom_call'}
  # The Transformer in bf16 takes cuDNN on a GPU (the smoke sequences are
  # too short for the flash kernels; SASRec asks for the weights, so 'xla');
  # float32 stays on 'xla'.
  implementations = {step: set(lowered.implementations)
                     for step, lowered in out['cuda'].items()}
  if name == 'mha_translate' and dtype == 'bfloat16':
    assert 'cudnn' in implementations['train_step']
    assert 'cudnn' in implementations['train_steps']
    assert 'cudnn' in implementations['greedy']
  if dtype == 'float32':
    assert all(i <= {'xla'} for i in implementations.values())


@pytest.mark.parametrize('platform, dtype, kernel', [
    ('tpu', jnp.bfloat16, 'pallas'),
    ('cuda', jnp.float32, 'pallas'),
    ('cuda', jnp.bfloat16, 'cudnn'),
])
def test_long_attention_lowers_to_the_kernel(platform, dtype, kernel):
  # L = 1024 causal, forward and backward: dispatch picks the kernel.
  x = jax.ShapeDtypeStruct((2, 1024, 4, 64), dtype)

  def loss(q, k, v):
    out = dot_product_attention(q, k, v, is_causal=True)
    return jnp.sum(out.astype(jnp.float32))

  with lowering._assumed_cudnn(CUDNN):  # pylint: disable=protected-access
    with dot_product.target_platform(lowering.PLATFORMS[platform]) as chosen:
      traced = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(x, x, x)
    text = traced.lower(lowering_platforms=(platform,)).as_text()
  assert set(chosen) == {kernel}
  for marker in lowering.expected_markers(platform, chosen):
    assert marker in text


def test_unknown_platform_is_a_clear_error():
  with pytest.raises(ValueError, match=r"unknown platform 'gpu'.*'cuda'"):
    lowering.lower(None, 'gpu')
