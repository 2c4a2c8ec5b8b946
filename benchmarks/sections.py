"""Rewriting the generated parts of BENCHMARKS.md, shared by the scripts.

Two kinds: a block between two marker comments (attention_speed.py,
device.py), and a section from its '## ' heading to the next one
(train_step.py). Everything else in the file is kept as it is.
"""

from __future__ import annotations

TRAIN_STEP_HEADER = '## Train step (benchmarks/train_step.py)'


def splice(text: str, generated: str, begin: str, end: str, *,
           empty: str = '') -> str:
  """``text`` with what is between ``begin`` and ``end`` set to ``generated``.

  Without the markers, the block goes before benchmarks/train_step.py's
  first section (that script rewrites its sections in place), or at the end;
  an empty ``text`` becomes ``empty`` followed by the block.
  """
  block = f'{begin}\n\n{generated.strip()}\n\n{end}'
  if begin in text and end in text.split(begin, 1)[1]:
    head, rest = text.split(begin, 1)
    return head + block + rest.split(end, 1)[1]
  if not text.strip():
    return f'{empty}{block}\n'
  if TRAIN_STEP_HEADER in text:
    head, tail = text.split(TRAIN_STEP_HEADER, 1)
    return f'{head.rstrip()}\n\n{block}\n\n{TRAIN_STEP_HEADER}{tail}'
  return f'{text.rstrip()}\n\n{block}\n'


def replace_section(text: str, header: str, lines: list[str]) -> str:
  """``text`` with the section under ``header`` (up to the next '## ') set
  to ``lines``; appended when missing."""
  block = '\n'.join(lines).rstrip('\n') + '\n'
  if header not in text:
    return text.rstrip('\n') + '\n\n' + block
  head, rest = text.split(header, 1)
  nxt = rest.find('\n## ')
  tail = rest[nxt + 1:] if nxt >= 0 else ''
  return head + block + ('\n' + tail if tail else '')
