"""Mixed precision: with config.dtype='bfloat16' every matmul of a model's
training, validation and decoding steps takes bfloat16 operands, while the
parameters, the optimizer state and the model's outputs stay float32. One
config per task trains, checkpoints, resumes (to what an uninterrupted run
computes) and is scored by eval.py's function in bfloat16, and a short
toy-translation run ends within a point of float32's validation token
accuracy."""

import collections
import importlib
import os
import shutil

import jax
from jax.extend import core as jax_core
import numpy as np
import pytest

from attention import tasks
from attention.training import checkpoints
from attention.training import train_lib
from conftest import read_metrics

EXPERIMENTS = ('mha_translate', 'bahdanau_translate', 'rnnencdec_translate',
               'mha_movies', 'bahdanau_movies', 'mf_movies')
# The loop and the tasks see a model only through its float32 outputs, so
# one run per task shows them in bfloat16 (the Transformer, with beam search
# over bfloat16 caches; target attention, with sampled negatives and chunked
# ranking); every model's own dtypes are checked on its traced steps. Each
# further config would add 5 to 30 s of compilation on a 2-core CPU.
LOOP_RUNS = ('mha_translate', 'bahdanau_movies')
# mha_translate trains long enough to learn about 22% of the validation
# tokens (always guessing the end token scores 13%), on enough of them
# (about 4,000) that one point is well above the difference bfloat16
# rounding makes (0.2 to 0.35 points over seeds 0-2).
ACCURACY_STEPS = 100
ACCURACY_VALIDATION = 512


@pytest.fixture(scope='module', autouse=True)
def quick_compiles():
  """These runs test dtypes and the loop, not speed: XLA compiles them with
  few optimizations (about twice as fast to compile on a CPU)."""
  before = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def get_config(name, dtype='bfloat16'):
  """The :smoke config of ``name`` in ``dtype``, without attention plots
  (their weights are float32 in either dtype); mha_translate trains for
  ACCURACY_STEPS (checkpoints halfway and at the end) at a higher rate."""
  config = importlib.import_module(f'configs.{name}').get_config('smoke')
  config.dtype = dtype
  plots = ('num_alignment_examples' if config.task == 'translate' else
           'num_attention_examples')
  config.eval[plots] = 0
  if name == 'mha_translate':
    config.num_train_steps = ACCURACY_STEPS
    config.eval_every_steps = ACCURACY_STEPS
    config.checkpoint_every_steps = ACCURACY_STEPS // 2
    config.log_every_steps = ACCURACY_STEPS // 2
    config.optimizer.learning_rate = 0.02
    config.data.num_validation = ACCURACY_VALIDATION
  return config


def _dot_operand_dtypes(jaxpr, found=None):
  """Counter of (lhs, rhs) dtypes of every dot_general in ``jaxpr``, nested
  jaxprs (scans, loops, jits) included."""
  found = collections.Counter() if found is None else found
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      found[tuple(str(v.aval.dtype) for v in eqn.invars)] += 1
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jax_core.ClosedJaxpr):
          _dot_operand_dtypes(sub.jaxpr, found)
        elif isinstance(sub, jax_core.Jaxpr):
          _dot_operand_dtypes(sub, found)
  return found


# Every config in bfloat16; float32 shows that the check can fail.
@pytest.mark.parametrize('name, dtype', [
    *((name, 'bfloat16') for name in EXPERIMENTS),
    ('mha_translate', 'float32'), ('mha_movies', 'float32')])
def test_every_matmul_runs_in_the_compute_dtype(name, dtype, tmp_path):
  """Traced, not run: the training loss, the validation step and the test
  predictors (greedy and beam decoding)."""
  config = get_config(name, dtype)
  task = tasks.get_task(config.task)(config, str(tmp_path))
  params = jax.eval_shape(task.init_params, jax.random.key(0))
  assert {str(x.dtype) for x in jax.tree.leaves(params)} == {'float32'}
  train = next(iter(task.train_batches()))
  train = {k: train[k] for k in task.train_keys}
  test = next(iter(task.eval_batches('test')))
  loss = lambda p, b: task.loss_fn(p, b, jax.random.key(0), True)
  steps = {'train': (loss, train), 'eval': (task.eval_step, test)}
  steps.update({k: (fn, test) for k, fn in task.predictors().items()})
  for step, (fn, batch) in steps.items():
    found = _dot_operand_dtypes(jax.make_jaxpr(fn)(params, batch).jaxpr)
    assert found and set(found) == {(dtype, dtype)}, (step, found)
  # Logits (or scores) and attention weights leave the model in float32.
  if config.task == 'translate':
    args = (train['src'], train['tgt_in'])
  else:
    args = (train['inputs'], train['user'], train['targets'][..., None])
  outputs = jax.eval_shape(task.model.apply, {'params': params}, *args)
  assert {str(x.dtype) for x in jax.tree.leaves(outputs)} == {'float32'}


@pytest.fixture(scope='module')
def bf16_runs(tmp_path_factory):
  """name -> its bfloat16 run, made when first asked for: trained to the
  end, cut back to its halfway checkpoint (as if killed there), resumed,
  and scored on the test split.

  A run is (config, workdir, the metrics rows of the uninterrupted run,
  eval.py's results).
  """
  made = {}

  def get(name):
    if name not in made:
      config = get_config(name)
      workdir = str(tmp_path_factory.mktemp(f'bf16_{name}'))
      train_lib.train_and_evaluate(config, workdir)
      uninterrupted = read_metrics(workdir)
      shutil.rmtree(os.path.join(workdir, 'checkpoints',
                                 str(config.num_train_steps)))
      train_lib.train_and_evaluate(config, workdir)
      results = train_lib.evaluate_checkpoint(config, workdir)
      made[name] = (config, workdir, uninterrupted, results)
    return made[name]
  return get


@pytest.fixture(params=LOOP_RUNS)
def bf16_run(request, bf16_runs):
  return bf16_runs(request.param)


def _logged(rows):
  """{(step, metric): value} of metrics.jsonl rows, timings left out."""
  return {(r['step'], k): v for r in rows for k, v in r.items()
          if k not in ('step', 'train/steps_per_second',
                       'train/elapsed_seconds')}


def test_trains_checkpoints_resumes_and_evaluates(bf16_run):
  config, workdir, uninterrupted, results = bf16_run
  total = config.num_train_steps
  rows = read_metrics(workdir)
  losses = {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}
  assert sorted(losses) == [total // 2, total]
  assert all(np.isfinite(list(losses.values())))
  # The resumed half logs what the uninterrupted run logged.
  assert _logged(rows) == pytest.approx(_logged(uninterrupted), rel=1e-6)
  assert checkpoints.committed_steps(workdir) == [total // 2, total]
  assert results['step'] == total
  documented = ({'bleu', 'beam/bleu', 'token_accuracy', 'exact_match'}
                if config.task == 'translate' else
                {'full/ndcg@10', 'sampled_uniform100/hr@10'})
  assert documented <= set(results)
  assert all(np.isfinite(results[k]) for k in documented)


def test_parameters_and_optimizer_state_stay_float32(bf16_run):
  """What the checkpoint holds (Orbax's metadata, not a restore, which would
  cast to the dtypes asked for)."""
  config, workdir, _, _ = bf16_run
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  state = ckpts.manager.item_metadata(config.num_train_steps)['state']
  ckpts.close()
  dtypes = {part: collections.Counter(
      str(leaf.dtype) for leaf in jax.tree.leaves(
          state[part], is_leaf=lambda x: hasattr(x, 'dtype')))
            for part in ('params', 'opt_state')}
  assert set(dtypes['params']) == {'float32'}
  # Adam's two moments per parameter in float32; its step counts int32.
  assert set(dtypes['opt_state']) == {'float32', 'int32'}
  assert dtypes['opt_state']['float32'] == 2 * dtypes['params']['float32']


@pytest.fixture(scope='module')
def float32_reference(tmp_path_factory):
  """mha_translate's bfloat16 run in float32, uninterrupted: its last
  validation metrics."""
  workdir = str(tmp_path_factory.mktemp('f32_mha_translate'))
  return train_lib.train_and_evaluate(get_config('mha_translate', 'float32'),
                                      workdir)


def test_bfloat16_accuracy_within_a_point_of_float32(bf16_runs,
                                                    float32_reference):
  _, workdir, _, _ = bf16_runs('mha_translate')
  bf16 = read_metrics(workdir)[-1]
  assert bf16['step'] == ACCURACY_STEPS
  assert float32_reference['accuracy'] > 0.18  # it has learnt something
  assert abs(bf16['eval/accuracy'] - float32_reference['accuracy']) <= 0.01
