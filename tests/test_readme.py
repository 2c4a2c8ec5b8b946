"""The README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
BLOCKS = re.findall(r'```python\n(.*?)```', README.read_text(), re.DOTALL)


def test_readme_has_examples():
  assert len(BLOCKS) >= 2


@pytest.mark.parametrize('index', range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
  exec(compile(BLOCKS[index], f'README.md block {index}', 'exec'), {})  # pylint: disable=exec-used
  if 'print(' in BLOCKS[index] and '# (' in BLOCKS[index]:
    # A printed line the README shows as a comment must be what is printed.
    shown = re.findall(r'print\(.*\)\s+# (.*)', BLOCKS[index])
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == shown
