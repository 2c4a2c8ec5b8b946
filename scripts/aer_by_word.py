r"""Where a toy-task checkpoint's argmax alignment misses the gold one.

  python scripts/aer_by_word.py --workdir=runs/bahdanau_translate \
      [--config=configs/bahdanau_translate.py] [--alignment=NAME] [--top=15]

Runs the newest checkpoint over the validation split (teacher forcing, as the
AER logged in training), aligns each target word to its argmax source word,
and prints the misses per target word and the offset of a missed argmax from
the first gold source position (attention.tasks.translate.Task
.alignment_misses).
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attention.training import train_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/bahdanau_translate.py',
    'The config the workdir was trained with.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a toy-task run.')
_TOP = flags.DEFINE_integer('top', 15, 'Target words to list.')
_ALIGNMENT = flags.DEFINE_string(
    'alignment', None, "Which attention: 'alpha' (RNNsearch), 'layer<l>' or "
    "'layer<l>/head<h>' (Transformer); default alpha or the last layer.")
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  try:
    task, params, step = train_lib.restore(_CONFIG.value, _WORKDIR.value)
    out = task.alignment_misses(params, _ALIGNMENT.value)
  except (ValueError, FileNotFoundError, AttributeError) as e:
    sys.exit(f'error: {e}')
  totals, misses = out['totals'], out['misses']
  scored, missed = sum(totals.values()), sum(misses.values())
  aer = 1.0 - 2.0 * (scored - missed) / max(scored + out['gold_links'], 1)
  print(f'step {step}, alignment {out["name"]}: {scored} scored target words, {out["gold_links"]} gold '
        f'links, {missed} misses; AER {aer:.4f}')
  print('offset of a missed argmax from the first gold source word:',
        out['offsets'].most_common(6))
  print(f'{"target word":>14} {"misses":>7} {"of":>6} {"share":>6}')
  vocab = task.data.tgt_vocab
  for word, count in misses.most_common(_TOP.value):
    print(f'{vocab.decode([word]):>14} {count:7d} {totals[word]:6d} '
          f'{count / totals[word]:6.1%}')


if __name__ == '__main__':
  app.run(main)
