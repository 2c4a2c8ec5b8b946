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
