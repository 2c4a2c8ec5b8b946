r"""Writes interactions as a SASRec-format file: 'user item' lines.

  python scripts/sasrec_format.py --source=movielens \
      --path=../shared/data/ml-latest-small --out=/tmp/ml-latest-small.txt \
      [--min_rating=4] [--min_interactions=1]

The format of the files Kang & McAuley ship with SASRec (ml-1m.txt,
Video.txt) and that pmixer/SASRec.pytorch reads: one 'user item' pair per
line, users and items numbered from 1 (numeric order of the raw ids), each
user's lines in time order (ties keep file order), users in id order. Both
this project (config.data.source='interactions') and the reference code
then read the same sequences. Reads what the movies task reads
(--source=movielens|interactions); prints what it wrote.
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attention.data import movielens  # pylint: disable=g-import-not-at-top,wrong-import-position

_SOURCE = flags.DEFINE_enum('source', 'movielens', ['movielens', 'interactions'],
                            'What --path holds (as config.data.source).')
_PATH = flags.DEFINE_string('path', None, 'MovieLens folder/.zip or file.')
_OUT = flags.DEFINE_string('out', None, 'The SASRec-format file to write.')
_MIN_RATING = flags.DEFINE_float('min_rating', None,
                                 'Keep ratings >= this (default: all).')
_MIN_INTERACTIONS = flags.DEFINE_integer(
    'min_interactions', 1, 'Drop users with fewer interactions.')
flags.mark_flags_as_required(['path', 'out'])


def write(sequences: list, path: str) -> int:
  """Writes per-user item sequences (user u at index u - 1); returns lines."""
  tmp = path + '.tmp'
  lines = 0
  with open(tmp, 'w', encoding='utf-8') as f:
    for user, items in enumerate(sequences, start=1):
      f.writelines(f'{user} {int(item)}\n' for item in items)
      lines += len(items)
  os.replace(tmp, path)  # A crash never leaves half a file under `path`.
  return lines


def main(argv):
  del argv
  try:
    if _SOURCE.value == 'movielens':
      inter = movielens.read_movielens(_PATH.value)
    else:
      inter = movielens.read_interactions(_PATH.value)
    seqs = movielens.to_sequences(inter,
                                  min_interactions=_MIN_INTERACTIONS.value,
                                  min_rating=_MIN_RATING.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f'error: {e}')
  lines = write(seqs.sequences, _OUT.value)
  print(f'{_OUT.value}: {lines} lines, {len(seqs.sequences)} users, '
        f'{seqs.num_items} items (from {inter.layout})')


if __name__ == '__main__':
  app.run(main)
