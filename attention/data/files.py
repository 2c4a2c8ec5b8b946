"""Finding and reading text files: plain files, directories and .zip archives.

Every reader in this package goes through `find_file` and `read_lines`, so
all of them share one behaviour for bad input:

* a missing path or a missing member raises `FileNotFoundError` naming what was
  looked for and what was found;
* an empty file raises `ValueError`;
* a line that cannot be decoded or parsed is reported through a `BadLines`
  policy, which either raises `ValueError` with the file and line number
  (``on_bad_line='error'``) or counts it and carries on (``'skip'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import zipfile
from typing import IO, Iterator, Sequence

BAD_LINE_MODES = ('error', 'skip')


class BadLineError(ValueError):
  """A malformed line, with the file and the line number in its message."""


@dataclasses.dataclass
class BadLines:
  """What to do with malformed lines: raise, or count and skip.

  Attributes:
    mode: 'error' raises `BadLineError` on the first bad line; 'skip' counts it.
    skipped: number of lines skipped so far.
    examples: the first few skipped lines, as 'where: reason' strings.
  """
  mode: str = 'error'
  skipped: int = 0
  examples: list[str] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if self.mode not in BAD_LINE_MODES:
      raise ValueError(
          f'config.data.on_bad_line must be one of {BAD_LINE_MODES}, '
          f'got {self.mode!r}.')

  def report(self, where: str, lineno: int, reason: str) -> None:
    """Raises or counts one bad line (1-based `lineno`)."""
    message = f'{where}, line {lineno}: {reason}'
    if self.mode == 'error':
      raise BadLineError(
          f'{message}. Fix the file, or set config.data.on_bad_line=\'skip\' '
          'to skip malformed lines and count them.')
    self.skipped += 1
    if len(self.examples) < 5:
      self.examples.append(message)

  def log_summary(self, what: str) -> None:
    if self.skipped:
      logging.warning('Skipped %d malformed line(s) in %s; first: %s',
                      self.skipped, what, '; '.join(self.examples))


@dataclasses.dataclass(frozen=True)
class FileRef:
  """A file on disk, or a member of a .zip archive.

  Attributes:
    path: the file, or the .zip archive.
    member: the member inside the archive; None for a plain file.
  """
  path: str
  member: str | None = None

  def __str__(self) -> str:
    return f'{self.path}:{self.member}' if self.member else self.path

  @property
  def basename(self) -> str:
    return os.path.basename(self.member or self.path)

  @contextlib.contextmanager
  def open_binary(self) -> Iterator[IO[bytes]]:
    """Opens the file (or archive member) for reading bytes."""
    if self.member is None:
      with open(self.path, 'rb') as f:
        yield f
    else:
      with zipfile.ZipFile(self.path) as archive:
        with archive.open(self.member) as f:
          yield f

  def size(self) -> int:
    if self.member is None:
      return os.path.getsize(self.path)
    with zipfile.ZipFile(self.path) as archive:
      return archive.getinfo(self.member).file_size


def _check_exists(path: str, what: str) -> None:
  if not path:
    raise ValueError(f'config.data.path must be set for {what}; got {path!r}.')
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'config.data.path={path!r} does not exist (expected {what}).')


def _zip_members(path: str) -> list[str]:
  try:
    with zipfile.ZipFile(path) as archive:
      return [n for n in archive.namelist()
              if not n.endswith('/') and not n.startswith('__MACOSX/')]
  except zipfile.BadZipFile as e:
    raise ValueError(f'{path} is not a valid .zip archive: {e}') from None


def _dir_members(path: str, max_depth: int = 2) -> list[str]:
  """Relative paths of files under `path`, at most `max_depth` folders down."""
  found = []
  base_depth = path.rstrip(os.sep).count(os.sep)
  for root, dirs, files in os.walk(path):
    dirs.sort()
    if root.count(os.sep) - base_depth >= max_depth:
      dirs[:] = []
    for name in sorted(files):
      found.append(os.path.relpath(os.path.join(root, name), path))
  return found


def list_files(path: str, what: str) -> tuple[list[FileRef], bool]:
  """All files at `path` (a file, a directory or a .zip).

  Args:
    path: file, directory or .zip archive.
    what: a description of the expected content, for error messages.

  Returns:
    (files, is_container): the files, and whether `path` was a directory or
    archive (False for a single plain file).
  """
  _check_exists(path, what)
  if os.path.isdir(path):
    refs = []
    for m in _dir_members(path):
      full = os.path.join(path, m)
      refs.append(FileRef(full))
      if m.lower().endswith('.zip'):
        # A folder holding the official .zip (and, say, its README) works too.
        if not zipfile.is_zipfile(full):
          raise ValueError(f'{full} is not a valid .zip archive (truncated '
                           'or corrupt?); download it again.')
        refs += [FileRef(full, z) for z in _zip_members(full)]
    return refs, True
  if zipfile.is_zipfile(path):
    return [FileRef(path, m) for m in _zip_members(path)], True
  if path.lower().endswith('.zip'):
    raise ValueError(f'{path} is not a valid .zip archive (truncated or '
                     'corrupt?); download it again.')
  return [FileRef(path)], False


def find_file(path: str, names: Sequence[str], what: str,
              required: bool = True) -> FileRef | None:
  """Finds the first of `names` (by base name) at `path`.

  `path` may be a directory (searched two levels down, so both `ml-1m/` and its
  parent work, and inside any .zip it holds) or a .zip archive (any folder
  inside). The order of `names` is the order of preference.

  Args:
    path: directory or .zip archive.
    names: acceptable base names, most preferred first.
    what: a description of the expected content, for error messages.
    required: raise if none is found (else return None).

  Returns:
    The file found, or None when not `required` and none is found.

  Raises:
    FileNotFoundError: `path` does not exist, or (if `required`) has none of
      `names`.
  """
  files, _ = list_files(path, what)
  by_name = {}
  for ref in files:
    # Shallowest first: `_dir_members` and zip listings are not depth-sorted.
    depth = str(ref).count('/')
    if ref.basename not in by_name or depth < by_name[ref.basename][0]:
      by_name[ref.basename] = (depth, ref)
  for name in names:
    if name in by_name:
      return by_name[name][1]
  if not required:
    return None
  shown = sorted(by_name)[:20]
  raise FileNotFoundError(
      f'{path} has none of {list(names)} (expected {what}); '
      f'files found: {shown}{" ..." if len(by_name) > 20 else ""}.')


def read_lines(ref: FileRef, bad_lines: BadLines, *,
               encoding: str = 'utf-8',
               skip_blank: bool = True) -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, text without the line break) for each line.

  Lines that cannot be decoded with `encoding` go to `bad_lines` (raise or
  count). Blank lines are dropped silently when `skip_blank`.

  Raises:
    ValueError: the file is empty (zero bytes).
  """
  if ref.size() == 0:
    raise ValueError(f'{ref} is empty; expected at least one line.')
  with ref.open_binary() as f:
    for lineno, raw in enumerate(f, start=1):
      try:
        text = raw.decode(encoding)
      except UnicodeDecodeError as e:
        bad_lines.report(
            str(ref), lineno,
            f'bytes that are not valid {encoding} at column {e.start + 1} '
            f'({raw[e.start:e.start + 4]!r})')
        continue
      text = text.rstrip('\r\n')
      if lineno == 1 and text.startswith('\ufeff'):  # Byte order mark.
        text = text[1:]
      if skip_blank and not text.strip():
        continue
      yield lineno, text
