"""Orbax checkpoints of the train state and the data iterator.

Layout: ``<workdir>/checkpoints/<step>/{state,data}``. Orbax writes each
checkpoint into a temporary folder (``<step>.orbax-checkpoint-tmp-*``), writes
``commit_success.txt`` into it and renames it when complete; it ignores and
deletes temporary folders, so a checkpoint cut off mid-write is never loaded.
A step folder without ``commit_success.txt`` (one cut off while Orbax deleted
an old checkpoint, or copied in incomplete) is not listed either: restore only
ever sees committed checkpoints, and a writer removes such folders.

Each committed checkpoint also gets ``checksums.json``: the SHA-256 of every
file in it, written right after the commit. Restoring verifies them; a
checkpoint that fails (a flipped bit, a truncated or missing file) or that
Orbax cannot read is a `CorruptCheckpoint`. A training run then moves it
aside to ``<workdir>/corrupt_checkpoints/<step>-<n>/`` (kept for inspection,
never deleted), says so in one line and falls back to the newest good one.
A checkpoint without checksums.json (written before they existed, or cut
off between the commit and the checksums) is restored unverified, with a
warning.
"""

from __future__ import annotations

import hashlib
import json
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
CHECKSUMS = 'checksums.json'


class CorruptCheckpoint(ValueError):
  """A committed checkpoint that fails verification or cannot be read."""


def file_checksums(step_dir: str) -> dict[str, str]:
  """{path relative to ``step_dir``: SHA-256} of its files (CHECKSUMS aside)."""
  out = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel == CHECKSUMS:
        continue
      digest = hashlib.sha256()
      with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
          digest.update(block)
      out[rel] = digest.hexdigest()
  return dict(sorted(out.items()))


def verify(step_dir: str) -> bool:
  """Checks ``step_dir`` against its checksums.json.

  Returns:
    True if verified, False if it has no checksums.json.

  Raises:
    CorruptCheckpoint: a file is missing, added or changed, in one line.
  """
  path = os.path.join(step_dir, CHECKSUMS)
  if not os.path.exists(path):
    return False
  try:
    with open(path) as f:
      want = json.load(f)
  except ValueError as e:
    raise CorruptCheckpoint(f'checkpoint {step_dir}: {CHECKSUMS} is '
                            f'unreadable ({e})') from e
  got = file_checksums(step_dir)
  for rel in sorted(set(want) | set(got)):
    if rel not in got:
      problem = 'is missing'
    elif rel not in want:
      problem = 'was not there when it was written'
    elif got[rel] != want[rel]:
      problem = 'has changed since it was written (checksum differs)'
    else:
      continue
    raise CorruptCheckpoint(f'checkpoint {step_dir}: file {rel} {problem}')
  return True


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
    self.read_only = read_only
    self._max_to_keep = max_to_keep
    self._open()

  def _open(self) -> None:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self._max_to_keep, create=not self.read_only,
        read_only=self.read_only, enable_async_checkpointing=False,
        cleanup_tmp_directories=True)
    handlers = {'state': ocp.StandardCheckpointHandler()}
    if not self.read_only:
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
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoints: saved {step}')
    if jax.process_index() == 0:
      step_dir = os.path.join(self.directory, str(step))
      sums = file_checksums(step_dir)
      tmp = os.path.join(step_dir, CHECKSUMS + '.tmp')
      with open(tmp, 'w') as f:
        json.dump(sums, f, indent=1)
      os.replace(tmp, os.path.join(step_dir, CHECKSUMS))

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
    step_dir = os.path.join(self.directory, str(step))
    if not verify(step_dir):
      logging.warning('Checkpoint %s has no %s: restoring it unverified.',
                      step_dir, CHECKSUMS)
    try:
      metadata = self.manager.item_metadata(step)['state']
      metadata['params']  # pylint: disable=pointless-statement
    except Exception as e:  # pylint: disable=broad-except
      raise _unreadable(step_dir, e) from e
    self._check_shapes(step, metadata, abstract_state)
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise _unreadable(step_dir, e) from e
    return restored['state']

  def restore_newest_good(self, abstract_state: Any, data_iterator=None
                          ) -> tuple[int | None, Any]:
    """(step, state) of the newest checkpoint that verifies and reads.

    A corrupt one is moved aside (see the module docstring) with a one-line
    warning, and the next older one is tried; (None, None) when none is left.
    """
    while self.all_steps():
      step = self.all_steps()[-1]
      try:
        return step, self.restore(step, abstract_state, data_iterator)
      except CorruptCheckpoint as e:
        moved = self._move_aside(step)
        logging.warning('%s. Moved it to %s; falling back to the newest '
                        'older checkpoint (%s).', e, moved,
                        self.all_steps()[-1] if self.all_steps() else
                        'none: training starts from step 0')
    return None, None

  def _move_aside(self, step: int) -> str:
    """Moves checkpoint ``step`` out of the checkpoint folder, kept."""
    aside = os.path.join(os.path.dirname(self.directory),
                         'corrupt_checkpoints')
    target, n = os.path.join(aside, f'{step}-0'), 0
    while os.path.exists(target):
      n += 1
      target = os.path.join(aside, f'{step}-{n}')
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoints: {step} moved aside')
    self.manager.close()
    self._open()  # the manager lists steps once
    return target

  def _check_shapes(self, step, metadata, abstract_state):
    # The parameters say which config wrote a checkpoint; optimizer states
    # follow from them (and their metadata may spell containers differently).
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

  def describe_newest(self) -> str:
    """The newest checkpoint, in words (for the NaN message)."""
    step = self.latest_step()
    if step is None:
      return 'there is no checkpoint yet'
    return (f'the newest checkpoint is step {step} (verified against its '
            'checksums when it is restored)')

  def close(self):
    self.manager.close()


def _flatten(tree):
  leaves, _ = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape') and not isinstance(x, dict))
  for path, leaf in leaves:
    yield jax.tree_util.keystr(path, simple=True, separator='/'), leaf


def _unreadable(step_dir: str, error: Exception) -> CorruptCheckpoint:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  detail = lines[0][:300] if lines else ''
  return CorruptCheckpoint(f'checkpoint {step_dir} cannot be read: '
                           f'{type(error).__name__}: {detail}')
