"""Attention explained and made usable: multi-head and additive attention in JAX/Flax.

The package root holds the layers that other Flax projects import; they know
nothing of translation or movies::

  from attention import (MultiHeadAttention, AdditiveAttention,
                         BahdanauAttention, dot_product_attention,
                         make_causal_mask, make_padding_mask)

  dot_product.py  dot_product_attention: one function, every implementation
  chunked/        the blockwise (flash-style) implementation and its backward
  masks.py        causal and padding masks, the masked softmax
  multihead.py    MultiHeadAttention (grouped-query heads, decode cache)
  additive.py     AdditiveAttention (Bahdanau), MultiplicativeAttention (Luong)
  rotary.py       rotary position embeddings
  nnx.py          the same layers as native flax.nnx modules
                  (``from attention import nnx as attn``)

The experiments are built on them, each room importing only the rooms below:

  models/    the six models, found by config.model.name
  data/      generators, file readers and the input pipeline (NumPy, no Flax)
  tasks/     translation and recommendation: losses, eval steps, metrics,
             decoding and plots, on host data and pure functions
  training/  the one training loop: devices, checkpoints, processes, logs,
             sweeps

Axis legend: one for the whole package. Shapes in docstrings and the suffixes
of array names (``logits_BNTS``, ``q_BTNH``, as in einsum specs) use it:

  B  batch                       N  query heads
  L  length of one sequence      K  key/value heads (N divisible by K)
     (a history, a padded row)   G  query heads per key/value head, N // K
  T  query (target) length       H  head dim (Hv: of the values)
  S  key (source) length         D  model width: a layer's features, an RNN's
  V  vocabulary (items + 1)         state (Dq, Dk, Dv: of queries, keys, values)
  C  candidates                  E  embedding width, where it differs from D
  W  beams                       A  alignment size of the additive score
  R  query rows, T·G (a block's: r)  x  any number of leading axes

Lower-case t, s and r are the query positions, key positions and query rows
of one block (attention.chunked). A stack of layers is spelled out
(``[num_layers, B, N, T, S]``), never given a letter.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from attention.additive import AdditiveAttention
from attention.additive import BahdanauAttention
from attention.additive import LuongAttention
from attention.additive import MultiplicativeAttention
from attention.dot_product import dot_product_attention
from attention.masks import combine_masks
from attention.masks import make_causal_mask
from attention.masks import make_padding_mask
from attention.masks import masked_softmax
from attention.multihead import MultiHeadAttention

__all__ = [
    'AdditiveAttention',
    'BahdanauAttention',
    'LuongAttention',
    'MultiHeadAttention',
    'MultiplicativeAttention',
    'combine_masks',
    'dot_product_attention',
    'make_causal_mask',
    'make_padding_mask',
    'masked_softmax',
]

__version__ = '0.1.0'

# Modules that lived at the package root until the training machinery and
# the task helpers moved into rooms of their own. The old names still import
# (``from attention import train_lib``, ``import attention.sweep``,
# ``python -m attention.sweep``) and give the very same module objects.
MOVED = {
    'attention.checkpoints': 'attention.training.checkpoints',
    'attention.distributed': 'attention.training.distributed',
    'attention.sweep': 'attention.training.sweep',
    'attention.train_lib': 'attention.training.train_lib',
    'attention.writers': 'attention.training.writers',
    'attention.decoding': 'attention.tasks.decoding',
    'attention.metrics': 'attention.tasks.metrics',
    'attention.plotting': 'attention.tasks.plotting',
    'attention.ranking': 'attention.tasks.ranking',
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports an old module name as the module at its new place."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname not in MOVED:
      return None
    # The origin is the new file: `python -m` puts it in sys.argv[0].
    origin = importlib.util.find_spec(MOVED[fullname]).origin
    return importlib.util.spec_from_loader(fullname, self, origin=origin)

  def create_module(self, spec):
    module = importlib.import_module(MOVED[spec.name])
    self._own_spec = module.__spec__
    return module

  def exec_module(self, module):
    # The import machinery has just stamped the old name's spec on the
    # module; give it back its own.
    module.__spec__ = self._own_spec

  def get_code(self, fullname):
    """For ``python -m attention.<old name>``: the new module's code."""
    new = MOVED[fullname]
    return importlib.util.find_spec(new).loader.get_code(new)


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
  sys.meta_path.append(_MovedModules())
