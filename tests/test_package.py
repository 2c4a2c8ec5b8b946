"""attention/__init__.py: the layers at the package root, and every module
that moved into a room of its own still importable under its old name."""

import importlib
import subprocess
import sys

import pytest

import attention
from conftest import ROOT


def test_the_layers_import_from_the_root():
  from attention import (AdditiveAttention, BahdanauAttention,  # pylint: disable=g-import-not-at-top,unused-import
                         LuongAttention, MultiHeadAttention,
                         MultiplicativeAttention, combine_masks,
                         dot_product_attention, make_causal_mask,
                         make_padding_mask, masked_softmax)
  assert set(attention.__all__) >= {'MultiHeadAttention', 'AdditiveAttention',
                                    'dot_product_attention'}


@pytest.mark.parametrize('old, new', sorted(attention.MOVED.items()))
def test_a_moved_module_is_the_same_module_under_its_old_name(old, new):
  moved = importlib.import_module(new)
  assert importlib.import_module(old) is moved
  assert getattr(attention, old.split('.')[-1]) is moved
  # Its own spec, not the alias's: reload and pickling keep working.
  assert moved.__spec__.name == new


def test_old_import_forms_still_work():
  code = ('from attention import train_lib, sweep\n'
          'from attention.metrics import bleu\n'
          'import attention.checkpoints\n'
          'from attention.training import train_lib as new\n'
          'assert train_lib is new and callable(bleu)\n'
          'assert attention.checkpoints.COMMIT_FILE\n'
          'print("ok")\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == 'ok'


def test_dependencies_have_lower_bounds_only_and_the_pins_meet_them():
  import tomllib  # pylint: disable=g-import-not-at-top
  from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  with open(f'{ROOT}/pyproject.toml', 'rb') as f:
    project = tomllib.load(f)['project']
  with open(f'{ROOT}/requirements.txt') as f:
    pins = dict(line.strip().split('==') for line in f
                if '==' in line and not line.startswith('#'))
  requirements = [Requirement(r) for r in project['dependencies'] + sum(
      project['optional-dependencies'].values(), [])]
  for requirement in requirements:
    assert all(spec.operator == '>=' for spec in requirement.specifier), (
        requirement)  # an upper bound would downgrade a newer JAX install
    name = requirement.name.replace('_', '-')
    pin = pins.get(name) or pins.get(requirement.name)
    if pin is not None:
      assert requirement.specifier.contains(pin), (requirement, pin)


def test_a_jax_without_the_pallas_kernels_gets_a_clear_error(monkeypatch):
  from attention import pallas  # pylint: disable=g-import-not-at-top

  def missing(name):
    raise ImportError(f'No module named {name!r}')

  monkeypatch.setattr(pallas.importlib, 'import_module', missing)
  with pytest.raises(RuntimeError, match=r"needs jax\.experimental\.pallas"
                     r"\.ops\.tpu\.splash_attention.*'chunked'"):
    pallas._kernel_module('tpu')  # pylint: disable=protected-access
