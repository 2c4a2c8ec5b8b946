"""Input pipeline: bucketed, shuffled, sharded, checkpointable batches (grain).

The pipeline works on any *batch source*: an object with a `lengths` array (one
int per example, used for bucketing) and a `collate(rows, pad_len)` method that
turns example indices into a dict of padded NumPy arrays (rows of -1 are
padding rows). `TranslationSplit` and `MovieSplit` are batch sources.

How a batch is made:

1. Examples are put into length buckets. Each bucket holds examples whose
   length is at most its boundary; the boundaries (optionally multiples of
   `pad_multiple`; the last is the longest example) are chosen to minimise
   padding, so padding stays
   small while the number of distinct batch shapes (one jit compilation each)
   stays at most `num_buckets`. Without bucketing there is one bucket: every
   batch is padded to the longest example.
2. For each epoch, with a NumPy generator seeded by (seed, epoch), the
   examples of each bucket are shuffled and cut into global batches, and the
   order of all batches is shuffled. With `bucket_run` R > 1 (training) the
   batches of each bucket are cut into runs of R and the order of the runs is
   shuffled instead: R batches in a row share a shape, so the training loop
   can scan R steps in one compiled call (config.steps_per_call). This *plan*
   depends only on the lengths, the seed, `bucket_run` and the epoch, so every
   process computes the same plan.
3. Process p of P reads only rows [p*B/P, (p+1)*B/P) of each global batch: it
   collates (reads, pads) only its own share of the examples, and all
   processes agree on the padded length of every step.
4. The plan is wrapped as a `grain.MapDataset` of batches (`batch_dataset`),
   iterated through a `grain.DatasetIterator` (`batch_iterator`) whose
   `get_state()` / `set_state()` are a small JSON-able dict. Saving it with the
   train state (orbax: `grain.checkpoint.CheckpointSave(iterator)`) and
   restoring it makes a resumed run see exactly the batches an uninterrupted
   run would.

Training iterators drop the remainder of each bucket (different examples each
epoch); evaluation iterators (`shuffle=False`, `num_epochs=1`,
`drop_remainder=False`) visit every example exactly once and fill the last
batch of each bucket with padding rows (``example == -1``, all masks False).
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Protocol, Sequence

import grain
import numpy as np

from attention.data import config as data_config

Batch = dict[str, np.ndarray]


class BatchSource(Protocol):
  """What the pipeline needs from a split."""

  @property
  def lengths(self) -> np.ndarray:
    """int [N]: the padded length each example needs."""

  def collate(self, rows: np.ndarray, pad_len: int) -> Batch:
    """Padded arrays for examples `rows` (int [B], -1 = padding row)."""


def bucket_boundaries(lengths: np.ndarray, num_buckets: int, *,
                      min_bucket_size: int = 1, multiple: int = 1
                      ) -> list[int]:
  """Length boundaries that minimise padding.

  Chooses at most `num_buckets` boundaries (each a multiple of `multiple`,
  except the last, which is the longest example) so that padding every example
  to its bucket's boundary costs the fewest padded positions, with every bucket
  holding at least `min_bucket_size` examples. Exact, by dynamic programming
  over the distinct (rounded) lengths.

  Args:
    lengths: int [N] example lengths.
    num_buckets: at most this many boundaries (1 = no bucketing).
    min_bucket_size: the smallest allowed bucket (use the global batch size
      for training, so that no bucket is dropped whole). Ignored when even one
      bucket would be smaller.
    multiple: boundaries are multiples of this, except the last (8 or 128
      suit TPU tiles; costs padding on short sentences).

  Returns:
    Increasing boundaries; the last one is max(lengths).
  """
  lengths = np.asarray(lengths)
  if num_buckets < 1:
    raise ValueError(
        f'config.data.num_buckets must be >= 1, got {num_buckets}.')
  if multiple < 1:
    raise ValueError(f'config.data.pad_multiple must be >= 1, got {multiple}.')
  if lengths.size == 0:
    return [multiple]
  top = int(lengths.max())  # Never pad beyond the longest example.
  rounded = np.minimum(-(-lengths // multiple) * multiple, top)
  cands, counts = np.unique(rounded, return_counts=True)
  v = len(cands)
  below = np.r_[0, np.cumsum(counts)]  # below[j] = examples with rank < j.
  min_size = min(min_bucket_size, lengths.size)
  # best[j]: least padded size covering candidates [0, j) with k buckets, the
  # last ending at candidate j - 1.
  inf = np.inf
  best = np.full(v + 1, inf)
  best[0] = 0.0
  choice = []
  for _ in range(num_buckets):
    new = np.full(v + 1, inf)
    arg = np.full(v + 1, -1)
    for j in range(1, v + 1):
      i = np.arange(j)
      size = below[j] - below[i]
      cost = best[i] + size * float(cands[j - 1])
      cost[size < min_size] = inf
      k = int(np.argmin(cost))
      new[j], arg[j] = cost[k], k
    # Allow fewer buckets: keep the better of k - 1 and k buckets.
    keep_old = best <= new
    new[keep_old] = best[keep_old]
    arg[keep_old] = -2
    choice.append(arg)
    best = new
  out, j = [], v
  for arg in reversed(choice):
    if j == 0:
      break
    if arg[j] == -2:
      continue
    out.append(int(cands[j - 1]))
    j = int(arg[j])
  return sorted(out)


class _Planner:
  """Which examples form each global batch of each epoch, and their length."""

  def __init__(self, lengths: np.ndarray, global_batch_size: int,
               boundaries: Sequence[int], *, seed: int, shuffle: bool,
               drop_remainder: bool, bucket_run: int = 1):
    self.global_batch_size = global_batch_size
    self.bucket_run = bucket_run
    self.boundaries = np.asarray(boundaries, np.int64)
    self.seed, self.shuffle, self.drop_remainder = seed, shuffle, drop_remainder
    bucket = np.searchsorted(self.boundaries, lengths)
    self.members = [np.flatnonzero(bucket == b)
                    for b in range(len(self.boundaries))]
    b = global_batch_size
    self.per_bucket = [len(m) // b if drop_remainder else -(-len(m) // b)
                       for m in self.members]
    self.batches_per_epoch = int(sum(self.per_bucket))
    self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self._lock = threading.Lock()

  def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows int64 [num_batches, B] (-1 = padding) and pad_len [num_batches]."""
    with self._lock:
      if epoch in self._cache:
        return self._cache[epoch]
    rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
    b = self.global_batch_size
    rows, pads = [], []
    for members, n, boundary in zip(self.members, self.per_bucket,
                                    self.boundaries):
      if not n:
        continue
      order = rng.permutation(members) if rng is not None else members
      order = order[:n * b]
      if len(order) < n * b:
        order = np.concatenate([order, np.full(n * b - len(order), -1)])
      rows.append(order.reshape(n, b))
      pads.append(np.full(n, boundary))
    rows = np.concatenate(rows) if rows else np.zeros((0, b), np.int64)
    pads = np.concatenate(pads) if pads else np.zeros((0,), np.int64)
    if rng is not None:
      perm = self._order(rng, [n for n in self.per_bucket if n])
      rows, pads = rows[perm], pads[perm]
    with self._lock:
      if len(self._cache) >= 2:
        self._cache.pop(min(self._cache))
      self._cache[epoch] = (rows, pads)
    return rows, pads

  def _order(self, rng: np.random.Generator, counts: list[int]) -> np.ndarray:
    """A shuffled order of the batches, buckets' batches in runs.

    ``counts``: batches per non-empty bucket, in the order they were stacked.
    With one bucket or ``bucket_run`` 1, a plain permutation.
    """
    total, run = int(sum(counts)), self.bucket_run
    if run <= 1 or len(counts) <= 1:
      return rng.permutation(total)
    starts = np.cumsum([0] + counts[:-1])
    runs = [np.arange(s + i, s + min(i + run, n))
            for s, n in zip(starts, counts) for i in range(0, n, run)]
    return np.concatenate([runs[i] for i in rng.permutation(len(runs))])


class _MakeBatch:
  """A map_with_index function: global batch index -> this process' batch."""

  def __init__(self, source: BatchSource, planner: _Planner,
               process_index: int, process_count: int):
    self.source, self.planner = source, planner
    local = planner.global_batch_size // process_count
    self.row_slice = slice(process_index * local, (process_index + 1) * local)

  def __call__(self, index: int, _) -> Batch:
    n = self.planner.batches_per_epoch
    rows, pads = self.planner.plan(index // n)
    return self.source.collate(rows[index % n, self.row_slice],
                               int(pads[index % n]))


def _resolve_processes(process_index: int | None,
                       process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else (
        process_index)
    process_count = jax.process_count() if process_count is None else (
        process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index must be in [0, {process_count}), got '
                     f'{process_index}.')
  return process_index, process_count


def batch_dataset(source: BatchSource, global_batch_size: int, *,
                  seed: int = 0, shuffle: bool = True,
                  num_epochs: int | None = None, drop_remainder: bool = True,
                  bucketing: bool = True, num_buckets: int = 8,
                  pad_multiple: int = 1,
                  boundaries: Sequence[int] | None = None,
                  bucket_run: int = 1,
                  process_index: int | None = None,
                  process_count: int | None = None,
                  local_device_count: int | None = None) -> grain.MapDataset:
  """This process' batches as a random-access `grain.MapDataset`.

  Args:
    source: a split (anything with `lengths` and `collate`).
    global_batch_size: B, the batch size summed over all processes.
    seed: shuffling seed (the same seed gives the same batches).
    shuffle: shuffle within buckets and the order of batches, anew each epoch.
    num_epochs: passes over the data; None repeats forever.
    drop_remainder: drop the last partial batch of each bucket (training), or
      fill it with padding rows (evaluation).
    bucketing: pad each batch to its length bucket (else to the longest
      example of the split).
    num_buckets: at most this many buckets (and batch shapes).
    pad_multiple: bucket boundaries are multiples of this (but the last).
    boundaries: explicit bucket boundaries (overrides `num_buckets`); the last
      must be >= the longest example.
    bucket_run: with `shuffle`, batches come in runs of this many from one
      bucket (one shape); 1 = each batch from any bucket.
    process_index: this process (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).
    local_device_count: if given, check that the per-process batch splits
      evenly over this many local devices.

  Returns:
    A MapDataset whose element i is this process' share of global batch i:
    a dict of arrays with leading dimension B / process_count.
  """
  process_index, process_count = _resolve_processes(process_index,
                                                    process_count)
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f'The global batch size must be a positive multiple of the number of '
        f'processes ({process_count}); got {global_batch_size}.')
  local = global_batch_size // process_count
  if local_device_count and local % local_device_count:
    raise ValueError(
        f'The per-process batch ({global_batch_size} / {process_count} = '
        f'{local}) must split evenly over {local_device_count} local devices.')
  if seed < 0:
    raise ValueError(f'seed must be >= 0, got {seed}.')
  if bucket_run < 1:
    raise ValueError(
        f'config.data.bucket_run must be >= 1, got {bucket_run}.')
  lengths = np.asarray(source.lengths)
  if lengths.size == 0:
    raise ValueError('Cannot batch an empty split.')
  longest = int(lengths.max())
  if boundaries is not None:
    boundaries = sorted(int(b) for b in boundaries)
    if boundaries[-1] < longest:
      raise ValueError(f'The last bucket boundary must be >= the longest '
                       f'example ({longest}); got {boundaries}.')
  elif bucketing:
    boundaries = bucket_boundaries(
        lengths, num_buckets, multiple=pad_multiple,
        min_bucket_size=global_batch_size if drop_remainder else 1)
  else:
    boundaries = bucket_boundaries(lengths, 1)
  planner = _Planner(lengths, global_batch_size, boundaries, seed=seed,
                     shuffle=shuffle, drop_remainder=drop_remainder,
                     bucket_run=bucket_run)
  if planner.batches_per_epoch == 0:
    raise ValueError(
        f'The split has {lengths.size} examples, fewer than one global batch '
        f'of {global_batch_size}; lower config.batch_size.')
  ds = grain.MapDataset.range(planner.batches_per_epoch).repeat(num_epochs)
  return ds.map_with_index(
      _MakeBatch(source, planner, process_index, process_count))


def batch_iterator(source: BatchSource, global_batch_size: int, *,
                   num_threads: int = 2, prefetch: int = 8,
                   **kwargs) -> grain.DatasetIterator:
  """A checkpointable iterator over this process' batches.

  Takes the arguments of `batch_dataset`, plus:

  Args:
    source: a split.
    global_batch_size: B over all processes.
    num_threads: threads that make batches ahead of time (0: on demand).
    prefetch: batches made ahead of time.
    **kwargs: passed to `batch_dataset`.

  Returns:
    A `grain.DatasetIterator`: `next(it)` gives a batch; `it.get_state()`
    gives a JSON-able dict and `it.set_state(state)` resumes from it.
  """
  ds = batch_dataset(source, global_batch_size, **kwargs)
  options = grain.ReadOptions(
      num_threads=num_threads,
      prefetch_buffer_size=prefetch if num_threads else 0)
  return iter(ds.to_iter_dataset(options))


def train_iterator(source: BatchSource, config: Any, *,
                   process_index: int | None = None,
                   process_count: int | None = None,
                   local_device_count: int | None = None
                   ) -> grain.DatasetIterator:
  """The training iterator an experiment config asks for.

  Reads config.batch_size (global), config.seed and the batching keys of
  config.data (see `attention.data.config.batching`). Shuffles, repeats
  forever, drops the remainder of each bucket; batches come in runs of
  config.data.bucket_run from one bucket.
  """
  data = data_config.batching(config.data)
  return _iterator(
      source, data, int(config.batch_size),
      seed=int(config.seed), bucket_run=int(data.bucket_run),
      shuffle=True, num_epochs=None, drop_remainder=True,
      process_index=process_index, process_count=process_count,
      local_device_count=local_device_count)


def eval_iterator(source: BatchSource, config: Any, *,
                  bucketing: bool | None = None,
                  process_index: int | None = None,
                  process_count: int | None = None,
                  local_device_count: int | None = None
                  ) -> grain.DatasetIterator:
  """One pass over every example, in a fixed order, padding rows included.

  Reads config.data.eval_batch_size (default config.batch_size) and the same
  bucketing keys as `train_iterator` (``bucketing``, when given, overrides
  config.data.bucketing: False pads every batch to the source's longest
  example, one shape). Rows with ``example == -1`` are padding.
  """
  data = data_config.batching(config.data)
  if bucketing is not None:
    data.bucketing = bucketing
  return _iterator(
      source, data, int(data.eval_batch_size or config.batch_size), seed=0,
      shuffle=False, num_epochs=1, drop_remainder=False,
      process_index=process_index, process_count=process_count,
      local_device_count=local_device_count)


def _iterator(source, data, global_batch_size, **kwargs):
  """batch_iterator with the batching keys ``data`` (filled) holds."""
  return batch_iterator(
      source, global_batch_size, bucketing=bool(data.bucketing),
      num_buckets=int(data.num_buckets), pad_multiple=int(data.pad_multiple),
      num_threads=int(data.num_threads), prefetch=int(data.prefetch),
      **kwargs)


def padding_fraction(batches: Sequence[Mapping[str, np.ndarray]],
                     mask_keys: Sequence[str]) -> float:
  """Share of padded positions over the given mask arrays of some batches."""
  real = total = 0
  for batch in batches:
    for key in mask_keys:
      m = np.asarray(batch[key])
      real += int(m.sum())
      total += m.size
  return 1.0 - real / total if total else 0.0
