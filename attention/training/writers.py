"""Metric logging: metrics.jsonl and TensorBoard event files (no TensorFlow).

Only process 0 writes; on other processes every call is a no-op.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping

import jax
import numpy as np


class MetricWriter:
  """Writes ``{"step": N, <metric>: value, ...}`` lines and TensorBoard data."""

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(workdir, flush_secs=30)

  def truncate_after(self, step: int) -> None:
    """Drops lines logged after ``step`` (a run resumed from that step)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [line for line in f if line.strip()]
    kept = [line for line in lines
            if (row := _parse(line)) is not None and row.get('step', 0) <= step]
    if len(kept) != len(lines):
      tmp = self.path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(kept)
      os.replace(tmp, self.path)

  def logged(self, step: int, prefix: str) -> bool:
    """Whether metrics.jsonl holds a complete line of ``step`` with a key
    starting with ``prefix`` (e.g. 'eval/': that step's evaluation ran)."""
    if not os.path.exists(self.path):
      return False
    with open(self.path) as f:
      for line in f:
        row = _parse(line)
        if row and row.get('step') == step and any(
            k.startswith(prefix) for k in row):
          return True
    return False

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled or not scalars:
      return
    row = {'step': int(step)}
    row.update({k: _to_json_number(v) for k, v in scalars.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    for name, value in row.items():
      if name != 'step' and value is not None:
        self._tb.add_scalar(tensorboard_tag(name), value, int(step))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Images uint8 [H, W, 3] as TensorBoard images."""
    if not self.enabled:
      return
    for name, image in images.items():
      self._tb.add_image(tensorboard_tag(name), np.asarray(image), int(step),
                         dataformats='HWC')

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def tensorboard_tag(name: str) -> str:
  """``name`` with the characters TensorBoard tags forbid replaced by '_'.

  'eval/full/ndcg@10' -> 'eval/full/ndcg_10' (metrics.jsonl keeps the name);
  the same rule tensorboardX applies, without its log line per call.
  """
  return re.sub(r'[^-/\w\.]', '_', name)


def _to_json_number(value):
  value = float(np.asarray(value))
  return value if math.isfinite(value) else None


def _parse(line: str) -> dict[str, Any] | None:
  """A metrics.jsonl row, or None for a line a kill cut off mid-write (no
  line break, or not JSON)."""
  if not line.endswith('\n'):
    return None
  try:
    row = json.loads(line)
  except ValueError:
    return None
  return row if isinstance(row, dict) else None
