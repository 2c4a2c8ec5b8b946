"""Input pipeline: determinism, resume, process shares, buckets, eval pass."""

import json

import grain
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from attention.data import pipeline


class _Source:
  """A tiny batch source that records which examples it was asked for."""

  def __init__(self, lengths):
    self._lengths = np.asarray(lengths)
    self.read = []

  @property
  def lengths(self):
    return self._lengths

  def collate(self, rows, pad_len):
    self.read.extend(int(r) for r in rows if r >= 0)
    n = np.where(rows >= 0, self._lengths[np.maximum(rows, 0)], 0)
    tokens = np.where(np.arange(pad_len)[None, :] < n[:, None],
                      (rows[:, None] + 1), 0).astype(np.int32)
    return {'tokens': tokens, 'mask': tokens > 0,
            'example': np.asarray(rows, np.int32)}


def _lengths(n=203, seed=0):
  return np.random.default_rng(seed).integers(1, 60, size=n)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
      for x, y in zip(a, b))


KW = dict(process_index=0, process_count=1)


def test_deterministic_by_seed():
  src = _Source(_lengths())
  a = _take(pipeline.batch_iterator(src, 16, seed=1, **KW), 30)
  b = _take(pipeline.batch_iterator(src, 16, seed=1, num_threads=0, **KW), 30)
  c = _take(pipeline.batch_iterator(src, 16, seed=2, **KW), 30)
  assert _same(a, b)
  assert not _same(a, c)


def test_epochs_reshuffle_and_cover_the_data():
  src = _Source(_lengths())
  two = list(pipeline.batch_iterator(src, 16, seed=0, num_epochs=2, **KW))
  epochs = [two[:len(two) // 2], two[len(two) // 2:]]
  for epoch in epochs:
    examples = np.concatenate([b['example'] for b in epoch])
    assert len(set(examples.tolist())) == len(examples)  # No repeats.
    assert len(examples) > 203 - 16 * 8  # At most a remainder per bucket.
  assert not _same(*epochs)  # Reshuffled.
  it = pipeline.batch_iterator(src, 16, seed=0, num_threads=0, **KW)
  seen = set()
  for batch in _take(it, 60):  # Several epochs: remainders rotate.
    seen |= set(batch['example'].tolist())
  assert len(seen) > 0.95 * 203


def test_resume_gives_identical_batches():
  src = _Source(_lengths())
  it = pipeline.batch_iterator(src, 8, seed=5, **KW)
  _take(it, 37)  # Past the end of the first epoch.
  state = it.get_state()
  json.dumps(state)  # Small and JSON-able.
  expected = _take(it, 25)
  resumed = pipeline.batch_iterator(src, 8, seed=5, **KW)
  resumed.set_state(state)
  assert _same(_take(resumed, 25), expected)


def test_resume_through_an_orbax_checkpoint(tmp_path):
  src = _Source(_lengths())
  it = pipeline.batch_iterator(src, 8, seed=3, **KW)
  _take(it, 11)
  with ocp.CheckpointManager(str(tmp_path / 'ckpt')) as mgr:
    mgr.save(11, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointSave(it)))
    mgr.wait_until_finished()
    expected = _take(it, 9)
    restored = pipeline.batch_iterator(src, 8, seed=3, **KW)
    mgr.restore(11, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(restored)))
  assert _same(_take(restored, 9), expected)


def test_processes_read_only_their_share():
  lengths = _lengths()
  full = _take(pipeline.batch_iterator(_Source(lengths), 12, seed=0,
                                       num_threads=0, **KW), 20)
  shares = []
  for p in range(3):
    src = _Source(lengths)
    batches = _take(pipeline.batch_iterator(
        src, 12, seed=0, num_threads=0, process_index=p, process_count=3), 20)
    assert all(b['example'].shape == (4,) for b in batches)
    read = set(src.read)
    mine = set(np.concatenate([b['example'] for b in batches]).tolist())
    assert read == mine  # Collated nothing beyond its own rows.
    shares.append(batches)
  for step, whole in enumerate(full):
    parts = [shares[p][step] for p in range(3)]
    # Same padded length on every process; rows are a partition.
    assert len({b['tokens'].shape for b in parts}) == 1
    np.testing.assert_array_equal(
        np.concatenate([b['example'] for b in parts]), whole['example'])


def test_batch_size_must_split_over_processes_and_devices():
  src = _Source(_lengths())
  with pytest.raises(ValueError, match='multiple of the number of processes'):
    pipeline.batch_dataset(src, 10, process_index=0, process_count=3)
  with pytest.raises(ValueError, match='split evenly over 4 local devices'):
    pipeline.batch_dataset(src, 6, local_device_count=4, **KW)
  with pytest.raises(ValueError, match='fewer than one global batch'):
    pipeline.batch_dataset(_Source([3, 4]), 8, **KW)


def test_bucketing_cuts_padding():
  src = _Source(_lengths(2000))
  bucketed = _take(pipeline.batch_iterator(src, 32, seed=0, num_buckets=8,
                                           **KW), 40)
  flat = _take(pipeline.batch_iterator(src, 32, seed=0, bucketing=False,
                                       **KW), 40)
  with_buckets = pipeline.padding_fraction(bucketed, ['mask'])
  without = pipeline.padding_fraction(flat, ['mask'])
  assert with_buckets < 0.15 < without
  assert len({b['tokens'].shape for b in bucketed}) <= 8
  assert {b['tokens'].shape for b in flat} == {(32, 59)}


def _padded(lengths, boundaries):
  return int(np.asarray(boundaries)[np.searchsorted(boundaries, lengths)].sum())


def test_bucket_boundaries_minimise_padding():
  lengths = _lengths(500, seed=3)
  best = pipeline.bucket_boundaries(lengths, 4)
  assert len(best) <= 4 and best[-1] == lengths.max()
  # No other choice of 4 boundaries from a coarse grid pads less.
  rng = np.random.default_rng(0)
  for _ in range(200):
    other = sorted(rng.choice(np.arange(1, 59), 3, replace=False).tolist())
    assert _padded(lengths, best) <= _padded(lengths, other + [59])
  assert pipeline.bucket_boundaries(lengths, 1) == [lengths.max()]
  eights = pipeline.bucket_boundaries(lengths, 8, multiple=8)
  assert all(b % 8 == 0 for b in eights[:-1])
  sized = pipeline.bucket_boundaries(lengths, 10, min_bucket_size=60)
  counts = np.bincount(np.searchsorted(sized, lengths))
  assert (counts >= 60).all()
  # A few long outliers are not left alone in a bucket smaller than a batch
  # (a training epoch would drop them every time).
  outliers = np.r_[np.ones(100, int), [99, 99, 99]]
  assert pipeline.bucket_boundaries(outliers, 8, min_bucket_size=16) == [99]


def test_eval_pass_visits_every_example_once():
  src = _Source(_lengths(101))
  config = ml_collections.ConfigDict({
      'batch_size': 16, 'seed': 0,
      'data': {'bucketing': True, 'num_buckets': 4, 'eval_batch_size': 8,
               'num_threads': 0, 'prefetch': 2}})
  batches = list(pipeline.eval_iterator(src, config, **KW))
  examples = np.concatenate([b['example'] for b in batches])
  real = examples[examples >= 0]
  assert sorted(real.tolist()) == list(range(101))
  for b in batches:
    assert b['example'].shape == (8,)
    assert not b['mask'][b['example'] < 0].any()
  again = list(pipeline.eval_iterator(src, config, **KW))
  assert _same(batches, again)


def test_train_iterator_reads_the_config():
  src = _Source(_lengths())
  config = ml_collections.ConfigDict({
      'batch_size': 8, 'seed': 4,
      'data': {'bucketing': False, 'num_buckets': 8, 'num_threads': 0,
               'prefetch': 2, 'eval_batch_size': None}})
  a = _take(pipeline.train_iterator(src, config, **KW), 5)
  b = _take(pipeline.batch_iterator(src, 8, seed=4, bucketing=False, **KW), 5)
  assert _same(a, b)
