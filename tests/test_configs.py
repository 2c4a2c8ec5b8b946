"""configs/: the variants, and one home for every default."""

import ast
import importlib
import os

import pytest

from configs import common
from conftest import ROOT

EXPERIMENTS = ('mha_translate', 'bahdanau_translate', 'rnnencdec_translate',
               'mha_movies', 'bahdanau_movies', 'mf_movies')


def test_unknown_variant_lists_the_valid_ones():
  mha_translate = importlib.import_module('configs.mha_translate')
  mha_movies = importlib.import_module('configs.mha_movies')
  with pytest.raises(ValueError, match=r"Unknown config variant 'tiny'; valid "
                     r"variants: \['smoke', 'tatoeba'\]"):
    mha_translate.get_config('tiny')
  with pytest.raises(ValueError, match=r"Unknown config variant 'tiny'; valid "
                     r"variants: \['smoke', 'movielens', 'sasrec_paper'\]"):
    mha_movies.get_config('tiny')


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_variants_select_their_data(name):
  module = importlib.import_module(f'configs.{name}')
  task = module.get_config().task
  real = 'tatoeba' if task == 'translate' else 'movielens'
  source = 'tsv' if task == 'translate' else 'movielens'
  assert module.get_config().data.source == 'toy'
  assert module.get_config(real).data.source == source
  smoke = module.get_config('smoke')
  assert smoke.num_train_steps < 10 and smoke.data.num_buckets == 1


def _get_config_body(name):
  with open(os.path.join(ROOT, 'configs', f'{name}.py')) as f:
    tree = ast.parse(f.read())
  return next(n for n in tree.body if isinstance(n, ast.FunctionDef)
              and n.name == 'get_config').body


def _starting_point(name):
  """The config that ``name`` starts from: its task's base in
  configs/common.py, or the experiment it derives from."""
  call = _get_config_body(name)[0].value  # config = <module>.<function>(...)
  module, function = call.func.value.id, call.func.attr
  if module == 'common':
    return getattr(common, function)()
  return importlib.import_module(f'configs.{module}').get_config()


def _assignments(name):
  """(dotted key, literal value) of each top-level ``config.<key> = <literal>``
  statement of get_config (the variant blocks below it are left out)."""
  for node in _get_config_body(name):
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
      continue
    key = ast.unparse(node.targets[0])
    if not key.startswith('config.'):
      continue
    try:
      value = ast.literal_eval(node.value)
    except ValueError:
      continue
    yield key[len('config.'):], value


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_a_config_sets_only_what_differs_from_the_defaults(name):
  base = _starting_point(name)
  repeated = []
  for key, value in _assignments(name):
    node, *parents = base, *key.split('.')[:-1]
    for part in parents:
      node = node[part] if part in node else {}
    leaf = key.split('.')[-1]
    if leaf in node and node[leaf] == value:
      repeated.append(f'config.{key} = {value!r}')
  assert not repeated, (f'configs/{name}.py repeats defaults of '
                        f'configs/common.py: {repeated}')
