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


def build(config_model: Any, **sizes: Any):
  """``attention.models.<config_model.name>.Model(**fields, **sizes)``.

  Args:
    config_model: ``config.model``: ``name`` plus the Model's fields.
    **sizes: fields the data decides (vocabulary sizes, item counts).

  Raises:
    ValueError: an unknown model name or field, listing the valid ones.
  """
  fields = dict(config_model)
  name = fields.pop('name', None)
  if name not in available():
    raise ValueError(f'Unknown config.model.name {name!r}; valid names: '
                     f'{available()}.')
  model_cls = importlib.import_module(f'attention.models.{name}').Model
  valid = {f.name for f in dataclasses.fields(model_cls)
           if f.init and f.name not in ('parent', 'name')}
  unknown = sorted(set(fields) - valid)
  if unknown:
    raise ValueError(f'Unknown config.model key(s) {unknown} for model '
                     f'{name!r}; valid keys: {sorted(valid - set(sizes))}.')
  return model_cls(**fields, **sizes)
