"""benchmarks/input_pipeline.py: its quick run and its loop arithmetic.

No speed is asserted (targets live in the benchmark's verdict): these tests
check that the script still runs, measures what it says, and reports it.
The quick run here skips the train loop (a minute of compilation); the
loop's wrapper and arithmetic are checked on their own.
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention.training import train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import input_pipeline as bench  # pylint: disable=g-import-not-at-top,wrong-import-position

FIELDS = {
    'translate': {'src', 'src_mask', 'tgt_in', 'tgt_out', 'tgt_mask',
                  'src_len', 'tgt_len', 'example'},
    'movies': {'inputs', 'targets', 'mask', 'length', 'user', 'example'},
}


@pytest.fixture(scope='module')
def report():
  args = bench.parse_args(['--quick', '--loop_steps=0', '--batches=6',
                           '--rounds=2'])
  return bench.run(args)


def test_quick_run_times_every_source_at_the_default_batch(report):
  assert [(r['task'], r['source']) for r in report['pipeline']] == list(
      bench.SOURCES)
  for row in report['pipeline']:
    assert row['batch_size'] == 64  # configs/common.py's default
    if row['source'] != 'toy':  # --quick writes its own files
      assert row['data'].startswith('synthetic')
    fields = FIELDS[row['task']] | (
        {'align'} if (row['task'], row['source']) == ('translate', 'toy')
        else set())
    for name in ('config', '0_threads'):
      m = row[name]
      assert m['batches'] == 12 and len(m['rates']) == 2
      assert m['batches_per_s'] > 0
      assert set(m['fields']) == fields
      assert m['leading_dims'] == [64]  # every field of every batch
      assert all(b == 64 and 1 <= length <= row['longest']
                 for b, length in m['shapes'])
    assert row['num_threads'] == 2 and row['prefetch'] == 8  # the defaults


def test_report_has_a_verdict_per_task(report):
  verdict = report['verdict']
  assert set(verdict) == {'translate', 'movies'}
  for v in verdict.values():
    assert isinstance(v['met'], bool)
    assert v['met'] == (v['batches_per_s'] >= bench.TARGET_BATCHES_PER_S)
  text = bench.format_report(report)
  assert 'Verdict:' in text and '--quick' in text
  for task, source in bench.SOURCES:
    assert f'| {task} | {source} |' in text


def test_data_dir_is_used_where_its_files_are(tmp_path):
  data_dir = tmp_path / 'data'
  (data_dir / 'tatoeba-spa-eng').mkdir(parents=True)
  (data_dir / 'tatoeba-spa-eng' / 'spa-eng.zip').write_bytes(b'')
  scratch = tmp_path / 'scratch'
  scratch.mkdir()
  config, described = bench.source_config(
      'translate', 'tsv', quick=False, data_dir=str(data_dir),
      scratch=str(scratch))
  assert config.data.path == str(data_dir / bench.TATOEBA)
  assert 'CC-BY 2.0 FR' in described
  # No ml-latest-small there: a synthetic one of the same layout.
  config, described = bench.source_config(
      'movies', 'movielens', quick=True, data_dir=str(data_dir),
      scratch=str(scratch))
  assert described.startswith('synthetic')
  assert sorted(os.listdir(config.data.path)) == ['movies.csv', 'ratings.csv']


def _probe(steps, transfers=(), fetches=()):
  probe = bench.LoopProbe(segment=1)
  # Each call returns (dispatched) 0.1 after it starts.
  probe.steps = [{'start': start, 'returned': start + 0.1, 'end': end,
                  'blocked': blocked, 'shape': shape, 'compiled': compiled}
                 for start, end, blocked, shape, compiled in steps]
  probe.transfers, probe.fetches = list(transfers), list(fetches)
  return probe


def test_outside_share_arithmetic():
  probe = _probe(
      [(0, 5, True, 'A', True),      # left out: compiles
       (6, 8.1, True, 'A', False),     # device 2, wall 3
       (9, 9.1, False, 'A', False),    # wall 2.4 (the dispatch left out)
       (11.5, 11.6, False, 'A', False),  # wall 2.5
       (14, 16.1, True, 'A', False),   # device 2, wall 3
       (17, 17.1, False, 'B', False),  # no blocked step of shape B
       (18, 20, True, 'A', False)],  # left out: the last step
      # Steps at 6 and 14: dispatch 0.1, fetch, next batch, transfer, rest.
      transfers=[(8.6, 9.0), (16.5, 16.9)],
      fetches=[(8.1, 8.3), (16.2, 16.3)])
  out = bench.outside_share(probe)
  assert out['outside_blocked'] == pytest.approx(1 - 4 / 6)
  assert out['outside'] == pytest.approx(1 - 4 / 4.9)  # mean device 2
  assert (out['blocked_steps'], out['overlapped_steps'],
          out['compiled']) == (2, 2, 1)
  host = out['host_ms_per_step']
  assert host['dispatch'] == pytest.approx(100)
  assert host['metrics_fetch'] == pytest.approx(150)
  assert host['next_batch_and_logging'] == pytest.approx(250)
  assert host['transfer'] == pytest.approx(400)
  assert host['other'] == pytest.approx(100)
  assert out['outside_stderr'] >= 0
  with pytest.raises(ValueError, match='raise --loop_steps'):
    bench.outside_share(_probe([(0, 1, True, 'A', False),
                                (2, 3, True, 'A', False)]))


def test_timed_step_blocks_by_segment_and_marks_compilations():
  step = jax.jit(lambda state, batch, rng: (state + batch['x'].sum(),
                                            {'loss': state}))
  probe = bench.LoopProbe(segment=3)
  timed = bench.TimedStep(step, probe)
  state = jnp.zeros((), jnp.float32)
  sizes = [3] * 10 + [4] + [3] * 19
  for n in sizes:
    state, _ = timed(state, {'x': np.ones(n, np.float32)}, None)
  assert float(state) == sum(sizes)
  compiled = [c['compiled'] for c in probe.steps]
  assert compiled == [True] + [False] * 9 + [True] + [False] * 19
  blocked = [c['blocked'] for c in probe.steps]
  for i in range(0, 30, 3):  # segments of 3 go together (compiling blocks)
    assert len({b for j, b in enumerate(blocked[i:i + 3])
                if not compiled[i + j]}) == 1
  assert 0 < sum(blocked) < 30  # the coin fell both ways
  assert all(c['end'] >= c['start'] for c in probe.steps)


def test_the_loop_builds_the_trainer_the_benchmark_swaps_in():
  # The benchmark patches train_lib.Trainer and reads its cached train_step.
  assert 'Trainer' in train_lib._train.__code__.co_names  # pylint: disable=protected-access
  assert isinstance(train_lib.Trainer.__dict__['train_step'],
                    functools.cached_property)
  timed = bench._timed_trainer(bench.LoopProbe(1))  # pylint: disable=protected-access
  assert issubclass(timed, train_lib.Trainer)
