"""Parallel corpora from TSV files (the Tatoeba / manythings.org layout).

One pair per line: ``source<TAB>target[<TAB>anything]``; extra columns (the
newer files carry an attribution column) are ignored. The file may be a plain
.txt/.tsv or sit inside a .zip (``spa-eng.zip`` holds ``spa-eng/spa.txt`` next
to an ``_about.txt``). Either column can be the source.

The split into train / validation / test is by a hash of the normalised source
sentence, so it does not depend on the order of the lines, all translations of
one sentence land in the same split, and no test (or validation) source sentence
occurs in training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from attention.data import files

_TEXT_SUFFIXES = ('.txt', '.tsv', '.tab')
_NOT_DATA = ('_about.txt', 'readme.txt', 'readme', 'license.txt', 'license')


@dataclasses.dataclass
class Pairs:
  """Sentence pairs as raw text.

  Attributes:
    src: source sentences.
    tgt: target sentences (same length as `src`).
    skipped: malformed lines skipped while reading.
  """
  src: list[str] = dataclasses.field(default_factory=list)
  tgt: list[str] = dataclasses.field(default_factory=list)
  skipped: int = 0

  def __len__(self) -> int:
    return len(self.src)


def _find_tsv(path: str, member: str | None) -> files.FileRef:
  """The TSV file at `path` (a file, or the one data file in a dir/zip)."""
  what = 'a TSV file of source<TAB>target lines, or a .zip / folder with one'
  refs, is_container = files.list_files(path, what)
  if not is_container:
    return refs[0]
  if member:
    for ref in refs:
      if ref.member == member or str(ref).endswith('/' + member) or (
          ref.basename == member):
        return ref
    raise FileNotFoundError(
        f'{path} has no member {member!r} (config.data.zip_member); files: '
        f'{[r.member or r.path for r in refs][:20]}.')
  candidates = [r for r in refs
                if r.basename.lower().endswith(_TEXT_SUFFIXES)
                and r.basename.lower() not in _NOT_DATA]
  if len(candidates) != 1:
    raise FileNotFoundError(
        f'{path}: expected exactly one .txt/.tsv data file (besides '
        f'_about.txt / README), found {[str(c) for c in candidates][:20]}. '
        'Name the one to read with config.data.zip_member.')
  return candidates[0]


def read_tsv(path: str, *, src_column: int = 0, member: str | None = None,
             on_bad_line: str = 'error', encoding: str = 'utf-8') -> Pairs:
  """Reads all pairs from a TSV file, a folder or a .zip.

  Args:
    path: .txt/.tsv file, folder, or .zip archive.
    src_column: 0 to translate column 0 into column 1, 1 for the reverse.
    member: the file inside a folder/.zip to read, when there are several.
    on_bad_line: 'error' raises on a malformed line (file and line number in
      the message); 'skip' skips it and logs a count.
    encoding: text encoding of the file.

  Returns:
    The pairs, in file order.

  Raises:
    FileNotFoundError: no such file, or no data file in the folder/.zip.
    ValueError: empty file, malformed line (with on_bad_line='error'), or no
      valid pair at all.
  """
  if src_column not in (0, 1):
    raise ValueError(
        f'config.data.src_column must be 0 or 1, got {src_column!r}.')
  ref = _find_tsv(path, member)
  bad = files.BadLines(on_bad_line)
  pairs = Pairs()
  for lineno, line in files.read_lines(ref, bad, encoding=encoding):
    cols = line.split('\t')
    if len(cols) < 2:
      bad.report(str(ref), lineno,
                 f'expected source<TAB>target, found {len(cols)} column '
                 f'({line[:60]!r})')
      continue
    a, b = cols[0].strip(), cols[1].strip()
    if not a or not b:
      bad.report(str(ref), lineno, 'empty source or target')
      continue
    pairs.src.append(a if src_column == 0 else b)
    pairs.tgt.append(b if src_column == 0 else a)
  bad.log_summary(str(ref))
  if not pairs.src:
    raise ValueError(
        f'{ref} has no valid source<TAB>target line ({bad.skipped} malformed '
        'line(s) skipped).')
  logging.info('Read %d pairs from %s (%d malformed lines skipped)',
               len(pairs), ref, bad.skipped)
  pairs.skipped = bad.skipped
  return pairs


def _unit_hash(text: str, seed: int) -> float:
  """A deterministic number in [0, 1) from a normalised sentence."""
  key = ' '.join(text.lower().split())
  digest = hashlib.sha256(f'{seed}\x00{key}'.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'little') / 2.0**64


def split_pairs(pairs: Pairs, *, validation_fraction: float,
                test_fraction: float, seed: int) -> dict[str, Pairs]:
  """Deterministic train / validation / test split by source sentence.

  Args:
    pairs: all pairs.
    validation_fraction: share of distinct source sentences for validation.
    test_fraction: share of distinct source sentences for test.
    seed: changes the split.

  Returns:
    {'train': ..., 'validation': ..., 'test': ...}, each in file order.
  """
  for name, value in (('validation_fraction', validation_fraction),
                      ('test_fraction', test_fraction)):
    if not 0.0 <= value < 1.0:
      raise ValueError(f'config.data.{name} must be in [0, 1), got {value!r}.')
  if validation_fraction + test_fraction >= 1.0:
    raise ValueError(
        'config.data.validation_fraction + test_fraction must be < 1, got '
        f'{validation_fraction} + {test_fraction}.')
  out = {k: Pairs() for k in ('train', 'validation', 'test')}
  for s, t in zip(pairs.src, pairs.tgt):
    u = _unit_hash(s, seed)
    split = ('test' if u < test_fraction else
             'validation' if u < test_fraction + validation_fraction else
             'train')
    out[split].src.append(s)
    out[split].tgt.append(t)
  return out
