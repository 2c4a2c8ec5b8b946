"""Models built on the attention layers; each file exports one ``Model``.

A model is found by name (``config.model.name``), not through a registry:
``build(config.model, ...)`` imports ``attention.models.<name>``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any


def available() -> list[str]:
  """The model names: the modules of this package."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if not m.name.startswith('_'))


def config_keys(model_cls) -> set[str]:
  """The fields of ``model_cls`` that ``config.model`` may set: all but the
  module's own and ``dtype``, which the task sets from ``config.dtype``."""
  return {f.name for f in dataclasses.fields(model_cls)
          if f.init and f.name not in ('parent', 'name', 'dtype')}


def build(config_model: Any, **sizes: Any):
  """``attention.models.<config_model.name>.Model(**fields, **sizes)``.

  Args:
    config_model: ``config.model``: ``name`` plus the Model's fields.
    **sizes: fields the task decides: from the data (vocabulary sizes, item
      counts) and the compute ``dtype`` (from config.dtype).

  Raises:
    ValueError: an unknown model name or field, listing the valid ones.
  """
  fields = dict(config_model)
  name = fields.pop('name', None)
  if name not in available():
    raise ValueError(f'Unknown config.model.name {name!r}; valid names: '
                     f'{available()}.')
  model_cls = importlib.import_module(f'attention.models.{name}').Model
  valid = config_keys(model_cls)
  unknown = sorted(set(fields) - valid)
  if unknown:
    raise ValueError(f'Unknown config.model key(s) {unknown} for model '
                     f'{name!r}; valid keys: {sorted(valid - set(sizes))}.')
  return model_cls(**fields, **sizes)
