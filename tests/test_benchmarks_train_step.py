"""benchmarks/train_step.py --compare steps_per_call, on the :smoke config."""

import importlib.util
import json
import os
import sys

from conftest import ROOT

_spec = importlib.util.spec_from_file_location(
    'bench_train_step', os.path.join(ROOT, 'benchmarks', 'train_step.py'))
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # its flax Module looks itself up there
_spec.loader.exec_module(bench)


def test_a_section_is_replaced_in_place_or_appended():
  text = '# B\n\n## One\n\nold\n\n## Two\n\nkept\n'
  got = bench.sections.replace_section(text, '## One', ['## One', '', 'new'])
  assert got == '# B\n\n## One\n\nnew\n\n## Two\n\nkept\n'
  got = bench.sections.replace_section(text, '## Two', ['## Two', '', 'new'])
  assert got == '# B\n\n## One\n\nold\n\n## Two\n\nnew\n'
  got = bench.sections.replace_section(text, '## Three', ['## Three', '', 'x'])
  assert got == text + '\n## Three\n\nx\n'


def test_steps_per_call_table_on_the_smoke_config(tmp_path):
  out, data = tmp_path / 'BENCH.md', tmp_path / 'bench.json'
  out.write_text('# Benchmarks\n\n## Other\n\nkept\n')
  bench.main([
      '--compare', 'steps_per_call', '--no_torch', '--rounds', '1',
      '--config', os.path.join(ROOT, 'configs', 'mha_translate.py:smoke'),
      '--movies_config', '',
      '--per_call', '1', '2', '--per_call_steps', '4', '--out', str(out),
      '--json', str(data)])
  text = out.read_text()
  assert '## Other\n\nkept\n' in text and bench.PER_CALL_HEADER in text
  assert '| K=1 |' in text and '| K=2 |' in text
  with open(data) as f:
    result = json.load(f)['steps_per_call']
  assert set(result) == {'translate'}  # --movies_config '' leaves them out
  for task in ('translate',):
    rows = result[task]['rows']
    assert set(rows) == {'K=1', 'K=2'}
    for row in rows.values():
      assert row['ms_per_step'] > 0 and row['faults_per_step'] >= 0
      assert row['first_call_s'] > 0
  # The same 16 batches of one shape for every variant.
  assert result['translate']['shape']['src'][0] == 16
  assert result['translate']['tokens_per_step'] > 0
