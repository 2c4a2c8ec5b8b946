r"""Where a target-attention checkpoint looks, on the synthetic movie world.

  python scripts/series_attention.py --workdir=runs/bahdanau_movies \
      [--config=configs/bahdanau_movies.py]

Scores each test user's held-out movie as the only candidate and reports the
mean attention weight on the last movie watched and, for users whose held-out
movie continues a series whose previous instalment is earlier in the history
(not last), the weight on that instalment against a uniform spread.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attention.training import train_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/bahdanau_movies.py',
    'The config the workdir was trained with.')
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Workdir of a target-attention run.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  if (_CONFIG.value.model.name != 'target_attention'
      or _CONFIG.value.data.source != 'toy'):
    sys.exit('error: needs a target_attention run on the synthetic world '
             "(config.data.source='toy').")
  task, params, step = train_lib.restore(_CONFIG.value, _WORKDIR.value)
  world = task.data.world
  split = task.data.test
  batch = split.collate(np.arange(len(split)), int(split.lengths.max()))
  candidates_B1 = batch['target'][:, None].astype(np.int32)
  _, aux = task._score_next({'params': params}, batch['inputs'],  # pylint: disable=protected-access
                            batch['length'], batch['user'], candidates_B1)
  weights_BL = np.asarray(aux['target_attention'])[:, 0, :]
  predecessor = np.asarray(world.predecessor)
  on_last, on_previous, uniform = [], [], []
  for r in range(len(split)):
    n = int(batch['length'][r])
    history = batch['inputs'][r, :n]
    on_last.append(weights_BL[r, n - 1])
    previous = predecessor[int(batch['target'][r])]
    where = np.flatnonzero(history == previous) if previous else []
    if len(where) and where[0] != n - 1:
      on_previous.append(weights_BL[r, where[0]])
      uniform.append(1.0 / n)
  print(f'step {step}, {len(split)} test users: mean weight on the last '
        f'movie {np.mean(on_last):.3f}')
  if on_previous:
    print(f'{len(on_previous)} held-out movies continue a series whose '
          f'previous instalment is earlier in the history: weight on it '
          f'{np.mean(on_previous):.3f} (uniform: {np.mean(uniform):.3f})')


if __name__ == '__main__':
  app.run(main)
