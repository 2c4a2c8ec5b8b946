"""Orbax checkpoints of the train state and the data iterator.

Layout: ``<workdir>/checkpoints/<step>/{state,data}``. Orbax writes each
checkpoint into a temporary folder (``<step>.orbax-checkpoint-tmp-*``), writes
``commit_success.txt`` into it and renames it when complete; it ignores and
deletes temporary folders, so a checkpoint cut off mid-write is never loaded.
A step folder without ``commit_success.txt`` (one cut off while Orbax deleted
an old checkpoint, or copied in incomplete) is not listed either: restore only
ever sees committed checkpoints, and a writer removes such folders.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from absl import logging

import grain
import jax
import numpy as np
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

COMMIT_FILE = 'commit_success.txt'


def committed_steps(workdir: str) -> list[int]:
  """Steps of ``<workdir>/checkpoints`` with a commit file (no Orbax needed)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()
                and os.path.exists(os.path.join(directory, n, COMMIT_FILE)))


def newest_config_path(workdir: str) -> str | None:
  """The config the newest start of the run in ``workdir`` trained with.

  The first start writes config.json; a resume that changes the config
  writes config.<step>.json beside it (never overwriting).
  """
  found = {-1 if name == 'config.json' else int(name.split('.')[1]): name
           for name in (os.listdir(workdir) if os.path.isdir(workdir) else [])
           if name == 'config.json' or re.fullmatch(r'config\.\d+\.json', name)}
  return os.path.join(workdir, found[max(found)]) if found else None


class Checkpoints:
  """Saves and restores ``{'state': pytree, 'data': grain iterator}``."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3,
               read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    if not read_only:
      self._remove_uncommitted()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False, cleanup_tmp_directories=True)
    handlers = {'state': ocp.StandardCheckpointHandler()}
    if not read_only:
      handlers['data'] = grain.checkpoint.CheckpointHandler()
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=handlers)

  def all_steps(self) -> list[int]:
    """Steps of the committed checkpoints."""
    return sorted(s for s in self.manager.all_steps() if self.committed(s))

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def committed(self, step: int) -> bool:
    return os.path.exists(os.path.join(self.directory, str(step),
                                       COMMIT_FILE))

  def _remove_uncommitted(self) -> None:
    """Deletes step folders that lack the commit file (process 0 deletes)."""
    if jax.process_index() == 0 and os.path.isdir(self.directory):
      for name in os.listdir(self.directory):
        path = os.path.join(self.directory, name)
        if (name.isdigit() and os.path.isdir(path)
            and not os.path.exists(os.path.join(path, COMMIT_FILE))):
          logging.warning('Removing the incomplete checkpoint %s (no %s: cut '
                          'off while being written or deleted).', path,
                          COMMIT_FILE)
          shutil.rmtree(path)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('checkpoints: uncommitted removed')

  def save(self, step: int, state: Any, data_iterator=None) -> None:
    items = {'state': ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self.manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any, data_iterator=None) -> Any:
    """Restores ``step`` into the structure, shapes and shardings given.

    Raises:
      ValueError: ``step`` is not a committed checkpoint.
      ValueError: the checkpoint's parameters do not have the shapes this
        config builds (a checkpoint of another config), naming the first
        mismatching parameter.
    """
    if step not in self.all_steps():
      raise ValueError(
          f'No committed checkpoint for step {step} in {self.directory}; '
          f'committed steps: {self.all_steps()}.')
    self._check_shapes(step, abstract_state)
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored['state']

  def _check_shapes(self, step, abstract_state):
    # The parameters say which config wrote a checkpoint; optimizer states
    # follow from them (and their metadata may spell containers differently).
    metadata = self.manager.item_metadata(step)['state']
    stored = dict(_flatten(metadata['params']))
    wanted = dict(_flatten(abstract_state['params']))
    for path in sorted(set(stored) | set(wanted)):
      if path not in stored or path not in wanted:
        where = 'checkpoint' if path in stored else 'model'
        raise ValueError(
            f'Checkpoint {self.directory}/{step} does not match this config: '
            f'{path!r} exists only in the {where}. Was it written by another '
            'config? Use a fresh --workdir or the config that wrote it.')
      got = tuple(getattr(stored[path], 'shape', ()))
      want = tuple(getattr(wanted[path], 'shape', np.shape(wanted[path])))
      if got != want:
        raise ValueError(
            f'Checkpoint {self.directory}/{step} does not match this config: '
            f'parameter {path!r} has shape {got} in the checkpoint but {want} '
            'in the model. Was it written by another config? Use a fresh '
            '--workdir or the config that wrote it.')

  def close(self):
    self.manager.close()


def _flatten(tree):
  leaves, _ = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape') and not isinstance(x, dict))
  for path, leaf in leaves:
    yield jax.tree_util.keystr(path, simple=True, separator='/'), leaf
