"""The models: the parameter trees of every experiment (pinned, so that
checkpoints keep loading), incremental decoding equals teacher forcing,
attention weights are distributions over real tokens, a movie model's
ranking equals its training pass."""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import models
from attention.data import movies
from attention.data import tokenizers
from attention.data import translation
from attention.models import rnnsearch
from attention.models import transformer
from conftest import ROOT
from conftest import SRC
from conftest import TGT_IN
from conftest import TINY_MODELS
from conftest import tiny_model

GOLDEN = os.path.join(ROOT, 'tests', 'golden', 'param_trees.json')

@pytest.mark.parametrize('name', sorted(TINY_MODELS))
def test_incremental_decoding_equals_teacher_forcing(name):
  model, variables = tiny_model(name)
  logits, aux = model.apply(variables, SRC, TGT_IN)
  assert logits.shape == (2, 5, 10) and logits.dtype == jnp.float32
  decoder = model.clone(decode=True) if name.startswith('transformer') else model
  state, cache = decoder.apply(variables, SRC, 5, method='init_decode',
                               mutable=['cache'])
  step = jax.jit(lambda cache, state, token: decoder.apply(
      {**variables, **cache}, state, token, method='decode_step',
      mutable=['cache']))
  steps = []
  for t in range(TGT_IN.shape[1]):
    (step_logits, state), cache = step(cache, state, TGT_IN[:, t])
    steps.append(step_logits)
  np.testing.assert_allclose(np.stack(steps, 1), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name, key, shape', [
    ('transformer', 'cross_attention', (2, 2, 4, 5, 6)),
    ('rnnsearch', 'alignment', (2, 5, 6)),
])
def test_attention_is_a_distribution_over_real_source_tokens(name, key, shape):
  model, variables = tiny_model(name)
  _, aux = model.apply(variables, SRC, TGT_IN)
  weights = np.asarray(aux[key])
  assert weights.shape == shape
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  src_pad = SRC == 0
  batch1 = weights[:, 1] if weights.ndim == 5 else weights[1]
  assert np.all(batch1[..., src_pad[1]] == 0.0)


@pytest.mark.parametrize('name, sees_current_input', [
    ('rnnsearch', False), ('rnnsearch_conditional', True)])
def test_which_target_words_the_rnnsearch_query_has_read(name,
                                                         sees_current_input):
  # Step t's input token is y_{t-1}. The paper's query s_{t-1} has not read it
  # yet; the conditional GRU's query has.
  model, variables = tiny_model(name)
  changed = TGT_IN.copy()
  changed[:, 3] = 7
  alpha = model.apply(variables, SRC, TGT_IN)[1]['alignment']
  alpha_changed = model.apply(variables, SRC, changed)[1]['alignment']
  np.testing.assert_array_equal(alpha_changed[:, :3], alpha[:, :3])
  assert not np.allclose(alpha_changed[:, 4], alpha[:, 4])
  assert np.allclose(alpha_changed[:, 3], alpha[:, 3]) != sees_current_input


def test_rnnencdec_has_no_attention():
  model, variables = tiny_model('rnnencdec')
  _, aux = model.apply(variables, SRC, TGT_IN)
  assert aux == {}
  assert 'attention' not in variables['params']


def test_dropout_changes_training_outputs_only():
  model = transformer.Model(src_vocab_size=12, tgt_vocab_size=10,
                            num_layers=1, d_model=16, num_heads=2, mlp_dim=32,
                            dropout_rate=0.3)
  variables = model.init(jax.random.key(0), SRC, TGT_IN)
  eval1 = model.apply(variables, SRC, TGT_IN)[0]
  eval2 = model.apply(variables, SRC, TGT_IN)[0]
  train = model.apply(variables, SRC, TGT_IN, deterministic=False,
                      rngs={'dropout': jax.random.key(1)})[0]
  np.testing.assert_array_equal(eval1, eval2)
  assert not np.allclose(eval1, train)


def test_bad_model_settings_are_clear_errors():
  with pytest.raises(ValueError, match="position must be one of"):
    transformer.Model(src_vocab_size=12, tgt_vocab_size=10,
                      position='rotary').init(jax.random.key(0), SRC, TGT_IN)
  with pytest.raises(ValueError, match='score must be one of'):
    rnnsearch.Model(src_vocab_size=12, tgt_vocab_size=10,
                    score='dot').init(jax.random.key(0), SRC, TGT_IN)
  with pytest.raises(ValueError, match='query must be one of'):
    rnnsearch.Model(src_vocab_size=12, tgt_vocab_size=10,
                    query='next').init(jax.random.key(0), SRC, TGT_IN)
  with pytest.raises(ValueError, match='exceeds max_length=4'):
    transformer.Model(src_vocab_size=12, tgt_vocab_size=10, position='learned',
                      max_length=4).init(jax.random.key(0), SRC, TGT_IN)


def param_tree(experiment, variant, dtype='float32'):
  """{path: [shape, dtype]} of the experiment's model on its smoke data, with
  the model fields of ``variant`` ('smoke' or 'default'), computing in
  ``dtype`` (config.dtype)."""
  module = importlib.import_module(f'configs.{experiment}')
  smoke = module.get_config('smoke')
  model_config = module.get_config(
      'smoke' if variant == 'smoke' else None).model
  if smoke.task == 'translate':
    data = translation.load_translation(smoke.data)
    model = models.build(model_config, src_vocab_size=data.src_vocab.size,
                         tgt_vocab_size=data.tgt_vocab.size,
                         pad_id=tokenizers.PAD_ID, dtype=jnp.dtype(dtype))
    args = (jnp.zeros((1, 8), jnp.int32),) * 2
  else:
    data = movies.load_movies(smoke.data)
    model = models.build(model_config, num_items=data.num_items,
                         num_users=data.num_users, max_len=data.train.max_len,
                         dtype=jnp.dtype(dtype))
    length = min(4, data.train.max_len)
    args = (jnp.ones((1, length), jnp.int32), jnp.ones((1,), jnp.int32),
            jnp.ones((1, length, 2), jnp.int32))
  shapes = jax.eval_shape(model.init, jax.random.key(0), *args)['params']
  flat, _ = jax.tree_util.tree_flatten_with_path(shapes)
  return {jax.tree_util.keystr(path, simple=True, separator='/'):
          [list(x.shape), str(x.dtype)] for path, x in flat}


with open(GOLDEN) as f:
  PINNED = json.load(f)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('key', sorted(PINNED))
def test_parameter_trees_are_pinned(key, dtype):
  """Every experiment's parameters keep their names, shapes and dtypes, so
  checkpoints written by earlier versions still load, in either compute
  dtype (parameters are float32 in both). The pins were written from the
  code before the package was reorganised; a change that moves a parameter
  on purpose rewrites them with ``python tests/test_models.py --write`` and
  says so."""
  assert param_tree(*key.split(':'), dtype) == PINNED[key]


def test_unknown_model_name_or_field_lists_the_valid_ones():
  config = importlib.import_module('configs.mf_movies').get_config('smoke')
  config.model.name = 'lstm'
  with pytest.raises(ValueError, match=r"Unknown config.model.name 'lstm'; "
                     r"valid names: \[.*'sasrec'"):
    models.build(config.model, num_items=3, num_users=2, max_len=4)
  config.model.name = 'mf'
  config.model.depth = 2
  with pytest.raises(ValueError, match=r"Unknown config.model key\(s\) "
                     r"\['depth'\] for model 'mf'; valid keys: "
                     r"\['d_model', 'use_bias'\]"):
    models.build(config.model, num_items=3, num_users=2, max_len=4)


@pytest.mark.parametrize('name', ['sasrec', 'target_attention', 'mf'])
def test_score_next_equals_the_last_position_of_a_full_pass(name):
  """score_next (evaluation) = __call__ (training) at the last real position,
  and scoring all movies = scoring them as explicit candidates."""
  experiment = {'sasrec': 'mha_movies', 'target_attention': 'bahdanau_movies',
                'mf': 'mf_movies'}[name]
  config = importlib.import_module(f'configs.{experiment}').get_config('smoke')
  if name == 'target_attention':
    config.model.chunk_size = 7  # several chunks, the last one partial
  model = models.build(config.model, num_items=20, num_users=3, max_len=6)
  inputs = jnp.array([[3, 5, 7, 0, 0, 0], [2, 4, 6, 8, 10, 12]])
  length = jnp.array([3, 6])
  user = jnp.array([1, 2])
  candidates = jnp.broadcast_to(jnp.arange(21), (2, 6, 21))
  params = jax.jit(model.init)(jax.random.key(0), inputs, user,
                               candidates[..., :2])
  some_candidates = jnp.array([[7, 1], [12, 20]])

  @jax.jit
  def run(inputs):  # One compilation for every call of this test.
    every, _ = model.apply(params, inputs, user, candidates)
    all_items = every
    if name != 'target_attention':  # It has no full softmax (tested below).
      all_items, _ = model.apply(params, inputs, user, None)
    full, _ = model.apply(params, inputs, length, user,
                          method=model.score_next)
    some, _ = model.apply(params, inputs, length, user, some_candidates,
                          method=model.score_next)
    return every, all_items, full, some

  every, all_items, full, some = run(inputs)
  np.testing.assert_allclose(jnp.broadcast_to(all_items, every.shape), every,
                             rtol=1e-5, atol=1e-5)
  want = np.stack([every[0, 2], every[1, 5]])
  np.testing.assert_allclose(full, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      some, np.take_along_axis(want, np.asarray(some_candidates), 1),
      rtol=1e-5, atol=1e-5)
  if name != 'mf':
    # Causal: changing a later movie leaves earlier positions alone.
    changed = run(inputs.at[1, 4].set(1))[0]
    np.testing.assert_allclose(changed[1, :4], every[1, :4], rtol=1e-5,
                               atol=1e-5)


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  if sys.argv[1:] != ['--write']:
    sys.exit('usage: python tests/test_models.py --write  (rewrites the pins)')
  with open(GOLDEN, 'w') as f:
    json.dump({key: param_tree(*key.split(':')) for key in PINNED}, f,
              indent=1, sort_keys=True)
