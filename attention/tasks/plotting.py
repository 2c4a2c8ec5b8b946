"""Attention heatmaps: the alignment picture, with tokens on the axes."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def attention_heatmap(weights: np.ndarray, x_labels: Sequence[str],
                      y_labels: Sequence[str], *, title: str = '',
                      x_title: str = 'source', y_title: str = 'target',
                      path: str | None = None) -> np.ndarray:
  """Draws weights [len(y_labels), len(x_labels)] as a grey-scale heatmap.

  Args:
    weights: rows are queries (y axis), columns keys (x axis), in [0, 1].
    x_labels: one label per column (source tokens, history movies...).
    y_labels: one label per row (target tokens, candidate movies...).
    title: figure title.
    x_title: x-axis title.
    y_title: y-axis title.
    path: where to write the PNG (its folder is created); None = no file.

  Returns:
    The image, uint8 [H, W, 3], for TensorBoard.
  """
  weights = np.asarray(weights, np.float32)
  if weights.shape != (len(y_labels), len(x_labels)):
    raise ValueError(f'attention_heatmap: weights {weights.shape} do not match '
                     f'{len(y_labels)} row and {len(x_labels)} column labels.')
  cell = 0.32
  # Room for the labels too (about 0.065 inch per character at font size 8):
  # column labels stand rotated above the matrix, row labels to its left.
  x_room = 0.065 * max((len(str(l)) for l in x_labels), default=0)
  y_room = 0.065 * max((len(str(l)) for l in y_labels), default=0)
  width = max(3.0, 1.0 + y_room + cell * len(x_labels))
  height = max(2.5, 1.0 + x_room + cell * len(y_labels))
  fig, ax = plt.subplots(figsize=(width, height), dpi=100)
  ax.imshow(weights, cmap='gray', vmin=0.0, vmax=1.0, aspect='auto',
            interpolation='nearest')
  ax.set_xticks(range(len(x_labels)))
  ax.set_xticklabels(x_labels, rotation=90, fontsize=8)
  ax.set_yticks(range(len(y_labels)))
  ax.set_yticklabels(y_labels, fontsize=8)
  ax.xaxis.tick_top()
  ax.xaxis.set_label_position('top')
  ax.set_xlabel(x_title)
  ax.set_ylabel(y_title)
  if title:
    ax.set_title(title, fontsize=9, y=-0.02, va='top')
  fig.tight_layout()
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  if path:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path)
  plt.close(fig)
  return image
