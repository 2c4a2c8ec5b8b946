"""Train an experiment: ``python train.py --config=configs/mha_translate.py``.

The training loop lands with the translation-experiments issue; until then this
entry point says so instead of pretending to train.
"""
import sys


def main() -> int:
  print('train.py: not yet implemented (the training loop lands with the '
        'translation-experiments issue).', file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(main())
