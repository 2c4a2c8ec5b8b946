"""The README and the docs/ pages: their Python examples run as written.

Every ```python block of README.md and docs/*.md runs in a fresh namespace (test
id '<page>:<n>', the page's n-th block counted from 1). Where a block shows what
it prints, as `print(...)  # <printed line>`, the printed lines must be exactly
those. The pages' relative links must point at files that exist.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
LINKED = [*PAGES, ROOT / 'BENCHMARKS.md']


def _blocks(page):
  return re.findall(r'```python\n(.*?)```', page.read_text(), re.DOTALL)


EXAMPLES = [(page, i, code) for page in PAGES
            for i, code in enumerate(_blocks(page), start=1)]


def _id(page):
  return page.relative_to(ROOT).as_posix()


def test_readme_has_examples():
  assert _blocks(ROOT / 'README.md')


@pytest.mark.parametrize(
    'page,index,code', EXAMPLES,
    ids=[f'{_id(page)}:{index}' for page, index, _ in EXAMPLES])
def test_example_runs(page, index, code, capsys):
  name = f'{_id(page)} python block {index}'
  exec(compile(code, name, 'exec'), {'__name__': name})  # pylint: disable=exec-used
  shown = re.findall(r'^\s*print\(.*\)\s+# (.*)$', code, re.MULTILINE)
  if shown:
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == shown


def test_readme_is_a_front_door():
  """Under 15 KB, and its Quickstart shows the two commands CI runs."""
  text = (ROOT / 'README.md').read_text()
  assert len(text.encode()) < 15_000
  quickstart = text.split('## Quickstart', 1)[1].split('```', 2)[1].split('\n')
  assert quickstart[1:3] == [
      'pip install -r requirements.txt && python train.py '
      '--config=configs/mha_translate.py',
      'pip install -r requirements.txt -r requirements-test.txt && '
      'python -m pytest -q tests',
  ]


@pytest.mark.parametrize('page', LINKED, ids=_id)
def test_relative_links_exist(page):
  text = re.sub(r'```.*?```', '', page.read_text(), flags=re.DOTALL)
  targets = re.findall(r'\]\(([^)\s]+)\)', text)
  missing = [t for t in targets
             if not re.match(r'[a-z]+:|#', t)
             and not (page.parent / t.split('#')[0]).exists()]
  assert not missing, f'{_id(page)} links to missing files: {missing}'


@pytest.mark.parametrize('task', ['translate', 'movies'])
def test_data_page_lists_every_config_data_key(task):
  from attention.data import config as data_config  # pylint: disable=g-import-not-at-top
  assert data_config.describe(task) in (ROOT / 'docs' / 'data.md').read_text()
