"""Evaluate a checkpoint: ``python eval.py --config=configs/mha_translate.py``.

Evaluation lands with the translation-experiments issue; until then this entry
point says so instead of pretending to score.
"""
import sys


def main() -> int:
  print('eval.py: not yet implemented (evaluation lands with the '
        'translation-experiments issue).', file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(main())
