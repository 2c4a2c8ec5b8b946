"""The one-shot GPU benchmark: attention paths, matmul peak and train steps.

(Over 500 lines: one script, so that it can be carried to a GPU machine and
run alone; its parts are the cases, the deadline and the report.)

  bash benchmarks/device.sh                  # on the GPU machine (<= 8 min)
  bash benchmarks/device.sh --dry-run        # the same code on CPU, tiny
  python benchmarks/device.py --report_only --write_markdown   # JSON -> md

benchmarks/device.sh checks the imports, prints the versions and the device
and runs this file; run alone, it measures the same. It writes its numbers to
benchmarks/device.json (--out) after every case, so a run cut short keeps what
it measured, and with --write_markdown renders them into BENCHMARKS.md between
the two marker comments BEGIN and END that name this file (the section goes
before benchmarks/train_step.py's, which that script rewrites to the end of
the file). A dry run's numbers never go into BENCHMARKS.md itself.

What it measures, in this order:

  peak       the card's bf16 matmul rate: the best of 5 rounds of 10
             back-to-back 8192³ matmuls, in jax and in torch; the larger is
             "the measured peak" that every "% peak" divides by (float32, at
             jax's default precision, alongside for reference).
  attention  forward+backward (the output and the gradients w.r.t. q, k, v
             for a random cotangent: ``jax.vjp``, and ``.backward`` in torch)
             in bfloat16, causal and not, at L = 1024 ... 32768 with N=16
             heads of H=128 and B = max(1, 16384 / L) sequences, for
             ``attention.dot_product_attention(implementation=...)`` with
             'xla', 'chunked', 'cudnn', 'pallas' and None, and
             ``torch.nn.functional.scaled_dot_product_attention`` on the same
             GPU in the same process (optional: "torch not installed"
             otherwise). 'xla' is skipped where its [B, N, L, L] float32
             logits, four times over, would not fit in the device's memory.
             Each case: one call to compile, then 3 rounds of back-to-back
             calls (as many as fill about 0.15 s), the median of the rounds'
             time per call. TFLOP/s counts 4·B·N·L²·H for the forward, half
             of it when causal, and 3.5× that for forward+backward (the
             backward's five matmuls, the recomputed logits among them, are
             2.5 forwards), the same count for every implementation. Each
             JAX column also records what it ran, by the dispatch's own
             record (``dot_product.target_platform``): None's choice, and a
             'pallas' call that fell back to another path. The cases run in
             two passes over the lengths, 'cudnn', 'pallas', None and torch
             first, then the slower 'chunked' and 'xla', so that a run short
             of time loses the latter.
  train      the step of ``attention.training.train_lib.Trainer`` for the
             default configs/mha_translate.py and configs/mha_movies.py, with
             config.dtype 'bfloat16' and 'float32', on batches of the task's
             own ``train_batches()``: the most frequent length bucket among
             the first 32 batches, up to 8 of its batches in turn, 3 rounds
             of back-to-back steps. tokens/s counts real (unpadded) source +
             target tokens (translate) or history positions (movies); MFU =
             the compiled step's ``cost_analysis()`` FLOPs / the step's time
             / the measured bf16 peak, for both dtypes. The toy translation
             data (200,000 pairs) is generated once for both dtypes.

Whatever fails (an error, out of memory, an implementation that this checkout
lacks) is recorded with its error and the run goes on. A deadline (--budget_s,
450 s from the start of this process) keeps the run within its time: a case
that would start too late is recorded as skipped with a note, and the
attention cases leave the last 150 s to the train steps. torch is imported
only after JAX has set up the GPU, so that JAX loads its own cuDNN first.

--dry-run runs the same code on CPU at tiny shapes (L = 128, 256; N=2, H=64;
the :smoke configs; one round of one call) to catch rot, in 1-2 minutes on 2
cores, nearly all of it compiling: 'cudnn' is recorded as skipped there, and
'pallas' runs the GPU kernel in Pallas interpret mode
(``attention.pallas.interpret('gpu')``).

The report's targets: the best JAX path >= 1.0x torch SDPA in causal
forward+backward at L >= 4096; >= 50% of the measured bf16 peak at L >= 8192;
implementation=None within 10% of the best path. Each is PASS, FAIL or — (not
measured).

Reused rather than repeated: ``train_lib.Trainer`` (the step, its input and
its placement exactly as training runs them) and ``sweep.load_config`` (the
config as ``train.py --config=...`` builds it). benchmarks/attention_speed.py
and benchmarks/train_step.py are CPU scripts whose helpers are fixed to their
shapes (N=8, H=64, float32) and markers, so this file has its own.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import functools
import importlib.metadata
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

# Let torch share the GPU: by default JAX takes 75% of its memory at start.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from attention import dot_product_attention  # pylint: disable=g-import-not-at-top
from attention.training import sweep  # pylint: disable=g-import-not-at-top
from attention.training import train_lib  # pylint: disable=g-import-not-at-top
from benchmarks import sections  # pylint: disable=g-import-not-at-top

IMPLS = ('xla', 'chunked', 'cudnn', 'pallas', 'None')  # JAX; 'None' = auto
COLUMNS = IMPLS + ('torch',)
# The order of the attention cases: first the kernels and torch at every
# length (what the targets compare), then the slower pure-JAX paths, so that
# a run short of time loses the latter.
PASSES = (('cudnn', 'pallas', 'None', 'torch'), ('chunked', 'xla'))
DTYPES = ('bfloat16', 'float32')


@functools.cache
def _device_platform():
  return jax.default_backend()


@functools.cache
def import_torch():
  """torch (an optional comparison), or None where it is not installed.

  Imported once JAX has set up its backend: imported first, torch can load
  its own cuDNN into the process, and JAX's cuDNN calls then fail on the
  version mismatch.
  """
  jax.devices()
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch


# One home for the sizes of a run; --dry-run swaps in DRY.
FULL = dict(
    lengths=(1024, 2048, 4096, 8192, 16384, 32768),
    heads=16, head_dim=128, tokens=16384,  # B = max(1, tokens / L)
    rounds=3, round_s=0.15, max_reps=100,  # attention timing
    peak_n=8192, peak_reps=10, peak_rounds=5,
    train=('configs/mha_translate.py', 'configs/mha_movies.py'),
    train_scan=32, train_batches=8, train_round_s=0.5,
    budget_s=450.0,          # the whole process, from its start
    train_reserve_s=150.0,   # of the budget, kept for the train steps
    min_case_s=5.0,          # an attention case starts only with this left
    min_train_s=30.0,        # and a train step with this
)
DRY = dict(
    lengths=(128, 256), heads=2, head_dim=64, tokens=256,
    rounds=1, round_s=0.0, max_reps=1,
    peak_n=256, peak_reps=1, peak_rounds=1,
    train=('configs/mha_translate.py:smoke', 'configs/mha_movies.py:smoke'),
    train_scan=2, train_batches=1, train_round_s=0.0,
    budget_s=300.0, train_reserve_s=0.0, min_case_s=0.0, min_train_s=0.0,
)

# Real (unpadded) tokens of a training batch, by config.task: the sum of
# these 0/1 fields.
TOKEN_MASKS = {'translate': ('src_mask', 'tgt_mask'), 'movies': ('mask',)}

BEGIN = ('<!-- BEGIN generated by benchmarks/device.py; edits between BEGIN '
         'and END are overwritten -->')
END = '<!-- END generated by benchmarks/device.py -->'
HEADER = '## GPU (benchmarks/device.sh)'
NOT_MEASURED = 'not yet measured on a GPU'
PLACEHOLDER = f"""{HEADER}

Placeholder, {NOT_MEASURED}. `bash benchmarks/device.sh`
(at most 8 minutes on one H200; `--help` for its flags) measures attention
forward+backward in bfloat16 at L = 1024 ... 32768 for every implementation
against torch SDPA, the card's bf16 matmul peak, and the train-step tokens/s
and MFU of the default translate and movies configs, into
`benchmarks/device.json`; `python benchmarks/device.py --report_only
--write_markdown` then writes this section from it (method in
`benchmarks/device.py`)."""


# ----------------------------------------------------------------------------
# Timing.


def time_calls(call, sync, rounds, round_s, max_reps, reps=None):
  """Seconds per call of `call` (already compiled) over `rounds` rounds.

  Each round makes `reps` back-to-back calls, by default as many as fill
  about `round_s` (at least 1, at most `max_reps`), and waits once at the
  end, so that dispatch overlaps the device's work as in a training loop.
  Returns (median, min, calls per round).
  """
  if reps is None:
    start = time.perf_counter()
    sync(call())
    one = time.perf_counter() - start
    reps = int(max(1, min(max_reps, round_s / max(one, 1e-6))))
  per_call = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(reps):
      out = call()
    sync(out)
    per_call.append((time.perf_counter() - start) / reps)
  return statistics.median(per_call), min(per_call), reps


class Deadline:
  """The run's time: a case starts only if enough of it is left, and none
  after SIGINT or SIGTERM (device.sh's hard limit sends SIGINT).

  The signals set a flag instead of raising KeyboardInterrupt, which JAX can
  swallow (raised inside its garbage-collection callback, it is only
  printed); the case under way finishes, the rest are skipped, and the
  report is written. A second signal raises KeyboardInterrupt.
  """

  def __init__(self, budget_s):
    self.start = time.time()
    self.end = self.start + budget_s
    self.stopped_by = None
    self._handlers = {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._handlers[sig] = signal.signal(sig, self._stop)

  def close(self):
    """Gives the signals back to their previous handlers."""
    for sig, handler in self._handlers.items():
      signal.signal(sig, handler)

  def _stop(self, signum, frame):
    del frame
    if self.stopped_by:
      raise KeyboardInterrupt
    self.stopped_by = signal.Signals(signum).name
    print(f'{self.stopped_by}: stopping after this case', flush=True)

  def skip_reason(self, needs_s, reserve_s=0.0):
    """None if a case that needs `needs_s` may start now, else why not."""
    if self.stopped_by:
      return f'skipped: the run was stopped ({self.stopped_by})'
    if self.end - reserve_s - time.time() >= needs_s:
      return None
    what = (f' ({reserve_s:.0f} s of it kept for the train steps)'
            if reserve_s else '')
    return (f'skipped: the run\'s {self.end - self.start:.0f} s budget{what} '
            'was spent')


def describe_error(e):
  """One line for the report: out of memory, or the error's first line."""
  text = f'{type(e).__name__}: {e}'
  if 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower():
    return 'out of memory: ' + text.strip().splitlines()[0][:300]
  lines = [line for line in text.strip().splitlines() if line.strip()]
  return (lines[0] if lines else type(e).__name__)[:300]


# ----------------------------------------------------------------------------
# The matmul peak.


def matmul_peak(n, reps, rounds):
  """TFLOP/s of n³ matmuls: jax bf16, jax float32 and torch bf16 (if any)."""
  flops = 2 * n ** 3
  out = {'n': n}
  for dtype in ('bfloat16', 'float32'):
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    mm = jax.jit(lambda a: a @ a)
    jax.block_until_ready(mm(a))
    _, best, _ = time_calls(lambda: mm(a), jax.block_until_ready, rounds,
                            None, None, reps=reps)
    out[f'jax_{dtype}'] = flops / best / 1e12
    del a
  device = torch_device()
  if isinstance(device, str):
    torch = import_torch()
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    a @ a  # pylint: disable=pointless-statement
    _, best, _ = time_calls(lambda: a @ a, lambda _: torch_sync(device),
                            rounds, None, None, reps=reps)
    out['torch_bfloat16'] = flops / best / 1e12
    del a
  else:
    out['torch_bfloat16'] = None
    out['torch_note'] = device['skipped']
  out['peak'] = max(v for k, v in out.items()
                    if k in ('jax_bfloat16', 'torch_bfloat16') and v)
  return out


# ----------------------------------------------------------------------------
# Attention.


def attention_flops(B, N, L, H, causal):
  """Forward+backward FLOPs: 3.5 × (4·B·N·L²·H, halved when causal)."""
  return 3.5 * 4 * B * N * L * L * H * (0.5 if causal else 1.0)


def torch_device():
  """'cuda' or 'cpu' for torch next to this JAX backend, else {'skipped'}."""
  torch = import_torch()
  if torch is None:
    return {'skipped': 'torch not installed'}
  if _device_platform() == 'cpu':
    return 'cpu'
  if not torch.cuda.is_available():
    return {'skipped': f'torch {torch.__version__} sees no CUDA device'}
  return 'cuda'


def torch_sync(device):
  if device == 'cuda':
    import_torch().cuda.synchronize()


def device_memory_bytes():
  """What the JAX allocator may use on device 0 (physical RAM on CPU)."""
  stats = None
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    pass
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def resolved_paths():
  """A context that yields the list of paths each attention call traced
  inside it resolved to (after any fallback): the dispatch's own record
  (``dot_product.target_platform``), or None where this checkout lacks it."""
  from attention import dot_product  # pylint: disable=g-import-not-at-top
  if not hasattr(dot_product, 'target_platform'):
    return contextlib.nullcontext(None)
  return dot_product.target_platform(_device_platform())


def pallas_mode():
  """The GPU (Triton) kernel in Pallas interpret mode on CPU, else nothing."""
  if _device_platform() != 'cpu':
    return contextlib.nullcontext()
  from attention import pallas  # pylint: disable=g-import-not-at-top
  return pallas.interpret('gpu')


def jax_case(impl, B, L, N, H, causal, sizes):
  """One JAX implementation's forward+backward: its timing or its error."""
  if impl == 'cudnn' and _device_platform() != 'gpu':
    return {'skipped': 'cuDNN needs an NVIDIA GPU (jax backend '
                       f'{_device_platform()!r})'}
  if impl == 'xla':
    matrix = B * N * L * L * 4
    if 4 * matrix > device_memory_bytes():
      return {'skipped': f'its [B, N, L, L] float32 logits are '
                         f'{matrix / 2**30:.0f} GiB, four of them over the '
                         f'device\'s {device_memory_bytes() / 2**30:.0f} GiB'}
  implementation = None if impl == 'None' else impl
  shape = (B, L, N, H)
  keys = jax.random.split(jax.random.key(L + causal), 4)
  q, k, v, cotangent = (jax.random.normal(key, shape, jnp.bfloat16)
                        for key in keys)

  def fwd_bwd(q, k, v, cotangent):
    attend = functools.partial(dot_product_attention, is_causal=causal,
                               implementation=implementation)
    out, vjp = jax.vjp(attend, q, k, v)
    return out, vjp(cotangent)

  with contextlib.ExitStack() as stack:
    if impl == 'pallas':
      stack.enter_context(pallas_mode())
    resolved = stack.enter_context(resolved_paths())
    compiled = jax.jit(fwd_bwd)
    start = time.perf_counter()
    jax.block_until_ready(compiled(q, k, v, cotangent))
    compile_s = time.perf_counter() - start
    median, fastest, reps = time_calls(
        lambda: compiled(q, k, v, cotangent), jax.block_until_ready,
        sizes['rounds'], sizes['round_s'], sizes['max_reps'])
  return {'ran': sorted(set(resolved)) if resolved is not None else None,
          'compile_s': compile_s, 'ms': median * 1e3,
          'min_ms': fastest * 1e3, 'reps': reps}


def torch_case(B, L, N, H, causal, sizes):
  """torch SDPA's forward+backward on the same shapes, [B, N, L, H]."""
  device = torch_device()
  if not isinstance(device, str):
    return device
  torch = import_torch()
  gen = torch.Generator(device=device).manual_seed(L + causal)
  q, k, v = (torch.randn(B, N, L, H, generator=gen, device=device,
                         dtype=torch.bfloat16, requires_grad=True)
             for _ in range(3))
  cotangent = torch.randn(B, N, L, H, generator=gen, device=device,
                          dtype=torch.bfloat16)
  sdpa = torch.nn.functional.scaled_dot_product_attention

  def call():
    for x in (q, k, v):
      x.grad = None
    out = sdpa(q, k, v, is_causal=causal)
    out.backward(cotangent)
    return out

  start = time.perf_counter()
  call()
  torch_sync(device)
  compile_s = time.perf_counter() - start
  median, fastest, reps = time_calls(call, lambda _: torch_sync(device),
                                     sizes['rounds'], sizes['round_s'],
                                     sizes['max_reps'])
  return {'compile_s': compile_s, 'ms': median * 1e3,
          'min_ms': fastest * 1e3, 'reps': reps,
          'version': torch.__version__}


def new_row(L, causal, sizes):
  """A row of the attention table, its columns still to measure."""
  N, H = sizes['heads'], sizes['head_dim']
  B = max(1, sizes['tokens'] // L)
  return {'L': L, 'B': B, 'N': N, 'H': H, 'causal': causal,
          'flops': attention_flops(B, N, L, H, causal), 'results': {}}


def attention_case(impl, row, sizes, peak):
  """One column of `row`: its timing, its error or why it was skipped."""
  B, L, N, H, causal = (row[k] for k in ('B', 'L', 'N', 'H', 'causal'))
  try:
    if impl == 'torch':
      result = torch_case(B, L, N, H, causal, sizes)
      if torch_device() == 'cuda':
        import_torch().cuda.empty_cache()  # its tensors are gone
    else:
      result = jax_case(impl, B, L, N, H, causal, sizes)
  except Exception as e:  # pylint: disable=broad-except
    result = {'error': describe_error(e)}
    print(traceback.format_exc(limit=-3), file=sys.stderr, flush=True)
  if 'ms' in result:
    result['tflops'] = row['flops'] / (result['ms'] / 1e3) / 1e12
    result['peak_share'] = result['tflops'] / peak
  return result


# ----------------------------------------------------------------------------
# Train steps.


@contextlib.contextmanager
def data_made_once():
  """Each translation data set is made once for every Trainer in the block.

  A translate Trainer makes its data when first asked (the default toy task
  generates 200,000 pairs, tens of seconds); both dtypes read the same.
  """
  from attention.data import translation  # pylint: disable=g-import-not-at-top
  load = translation.load_translation
  made = {}

  def load_once(config_data, workdir=None):
    key = config_data.to_json()
    if key not in made:
      made[key] = load(config_data, workdir)
    return made[key]

  translation.load_translation = load_once
  try:
    yield
  finally:
    translation.load_translation = load


class DtypeUnsupported(ValueError):
  pass


def train_config(config_arg, dtype):
  """The config train.py would build, with config.dtype = `dtype`."""
  config = sweep.load_config(config_arg)
  if 'dtype' not in config:
    if dtype != 'float32':
      raise DtypeUnsupported(
          f'config.dtype is not supported by this checkout ({config_arg} has '
          f'no dtype key), so {dtype} cannot be measured.')
  else:
    config.dtype = dtype
  return config


def compiled_flops(jitted, *args):
  """FLOPs of the compiled program (cost_analysis: a dict, or a list of one)."""
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) if flops is not None else float('nan')


def train_case(config_arg, dtype, sizes, peak, workdir):
  """tokens/s and MFU of the train step of one config and dtype."""
  config = train_config(config_arg, dtype)
  start = time.perf_counter()
  trainer = train_lib.Trainer(config, workdir)
  state = trainer.init_state()
  batches = trainer.task.train_batches()
  scanned = [next(batches) for _ in range(sizes['train_scan'])]

  def shape(batch):
    return tuple(np.shape(batch[k]) for k in trainer.task.train_keys)

  common = collections.Counter(map(shape, scanned)).most_common(1)[0][0]
  chosen = [b for b in scanned if shape(b) == common][:sizes['train_batches']]
  masks = TOKEN_MASKS[config.task]
  tokens = float(np.mean([sum(np.asarray(b[m]).sum() for m in masks)
                          for b in chosen]))
  on_device = [trainer.to_device(b, trainer.task.train_keys) for b in chosen]
  setup_s = time.perf_counter() - start
  step, rng = trainer.train_step, trainer.dropout_rng

  start = time.perf_counter()
  state, metrics = step(state, on_device[0], rng)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  flops = compiled_flops(step, state, on_device[0], rng)
  loss = train_lib.mean(*jax.device_get(metrics['loss']))
  turn = [0]

  def call():
    nonlocal state
    state, out = step(state, on_device[turn[0] % len(on_device)], rng)
    turn[0] += 1
    return out

  median, fastest, reps = time_calls(call, jax.block_until_ready,
                                     sizes['rounds'], sizes['train_round_s'],
                                     sizes['max_reps'])
  batch_shape = np.shape(chosen[0][trainer.task.train_keys[0]])
  return {'task': config.task, 'batch_shape': list(batch_shape),
          'batches': len(chosen), 'real_tokens_per_step': tokens,
          'setup_s': setup_s, 'compile_s': compile_s,
          'ms_per_step': median * 1e3, 'min_ms_per_step': fastest * 1e3,
          'reps': reps, 'tokens_per_s': tokens / median,
          'flops_per_step': flops, 'tflops': flops / median / 1e12,
          'mfu': flops / median / 1e12 / peak, 'first_loss': loss,
          'finite_loss': bool(math.isfinite(loss))}


# ----------------------------------------------------------------------------
# The run.


def versions():
  out = {'python': platform.python_version()}
  for dist in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy',
               'torch'):
    try:
      out[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      out[dist] = 'not installed'
  return out


def device_info():
  devices = jax.devices()
  return {'platform': _device_platform(), 'kind': devices[0].device_kind,
          'count': len(devices),
          'memory_gib': device_memory_bytes() / 2**30}


def run(args, sizes):
  """Measures everything; writes the JSON after every case; returns it."""
  deadline = Deadline(args.budget_s or sizes['budget_s'])
  results = {
      'meta': {
          'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
          'dry_run': args.dry_run, 'device': device_info(),
          'versions': versions(), 'budget_s': deadline.end - deadline.start,
          'sizes': dict(sizes),
          'interrupted': None,  # or the signal that stopped the run
      },
      'peak': None, 'attention': [], 'train': [],
  }
  print(f'device: {results["meta"]["device"]}', flush=True)

  def save():
    results['meta']['wall_s'] = time.time() - deadline.start
    write_json(args.out, results)

  lengths = ([int(x) for x in args.lengths.split(',')] if args.lengths
             else sizes['lengths'])
  configs = ([c for c in args.train.split(',') if c] if args.train is not None
             else sizes['train'])
  dtypes = args.dtypes.split(',') if args.dtypes else DTYPES
  reserve_s = sizes['train_reserve_s'] if configs else 0.0
  try:
    results['peak'] = matmul_peak(sizes['peak_n'], sizes['peak_reps'],
                                  sizes['peak_rounds'])
    peak = results['peak']['peak']
    print(f'matmul peak (TFLOP/s): {results["peak"]}', flush=True)
    save()
    causals = {'both': (True, False), 'causal': (True,),
               'non-causal': (False,)}[args.causal]
    rows = [new_row(L, causal, sizes) for L in lengths for causal in causals]
    results['attention'] = rows
    for impls in PASSES:
      for row in rows:
        for impl in impls:
          skip = deadline.skip_reason(sizes['min_case_s'], reserve_s)
          result = ({'skipped': skip} if skip else
                    attention_case(impl, row, sizes, peak))
          row['results'][impl] = result
          print(f'L={row["L"]} {"causal" if row["causal"] else "non-causal"}'
                f' {impl}: {_short(result)}', flush=True)
          save()
    with tempfile.TemporaryDirectory() as workdir, data_made_once():
      for config_arg in configs:
        for dtype in dtypes:
          case = {'config': config_arg, 'dtype': dtype}
          skip = deadline.skip_reason(sizes['min_train_s'])
          if skip:
            case['skipped'] = skip
          else:
            case_dir = os.path.join(workdir, str(len(results['train'])))
            try:
              case.update(train_case(config_arg, dtype, sizes, peak,
                                     case_dir))
            except Exception as e:  # pylint: disable=broad-except
              case['error'] = describe_error(e)
              if not isinstance(e, DtypeUnsupported):
                print(traceback.format_exc(limit=-3), file=sys.stderr)
          results['train'].append(case)
          print(f'train {config_arg} {dtype}: {_short(case)}', flush=True)
          save()
  except KeyboardInterrupt:
    deadline.stopped_by = deadline.stopped_by or 'KeyboardInterrupt'
    print('interrupted: writing what was measured', flush=True)
  finally:
    deadline.close()
  results['meta']['interrupted'] = deadline.stopped_by
  save()
  return results


def _short(r):
  if 'ms' in r:
    return f'{r["ms"]:.3g} ms'
  if 'tokens_per_s' in r:
    return (f'{r["tokens_per_s"]:,.0f} tokens/s, {r["ms_per_step"]:.3g} '
            f'ms/step, MFU {100 * r["mfu"]:.2g}%')
  return r.get('error') or r.get('skipped') or '?'


def write_json(path, results):
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(results, f, indent=1, allow_nan=True)
  os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Targets and the report.


def best_jax(row):
  """(implementation, result) of the fastest JAX path in a row, or None."""
  timed = [(r['ms'], impl) for impl, r in row['results'].items()
           if impl in IMPLS and 'ms' in r]
  if not timed:
    return None
  _, impl = min(timed)
  return impl, row['results'][impl]


def targets(results):
  """[(target, wanted, achieved, 'PASS' | 'FAIL' | '—')] of the issue."""
  out = []
  rows = results['attention']
  for row in rows:
    if not row['causal'] or row['L'] < 4096:
      continue
    best, t = best_jax(row), row['results'].get('torch', {})
    name = f'best JAX path vs torch SDPA, causal fwd+bwd, L={row["L"]}'
    if best is None or 'ms' not in t:
      why = ('no JAX path ran' if best is None else
             t.get('skipped') or t.get('error') or 'torch not run')
      out.append((name, '≥ 1.0×', f'not measured ({_clip(why)})', '—'))
    else:
      speed = t['ms'] / best[1]['ms']
      out.append((name, '≥ 1.0×', f'{speed:.2f}× ({best[0]})',
                  'PASS' if speed >= 1.0 else 'FAIL'))
  for row in rows:
    if row['L'] < 8192:
      continue
    best = best_jax(row)
    name = (f'best JAX path, share of the bf16 peak, '
            f'{"causal" if row["causal"] else "non-causal"} fwd+bwd, '
            f'L={row["L"]}')
    if best is None:
      out.append((name, '≥ 50%', 'not measured (no JAX path ran)', '—'))
    else:
      share = best[1]['peak_share']
      out.append((name, '≥ 50%', f'{100 * share:.0f}% ({best[0]})',
                  'PASS' if share >= 0.5 else 'FAIL'))
  worst = None
  for row in rows:
    none = row['results'].get('None', {})
    timed = [r['ms'] for impl, r in row['results'].items()
             if impl in IMPLS and impl != 'None' and 'ms' in r]
    if 'ms' in none and timed:
      slow = none['ms'] / min(timed)
      if worst is None or slow > worst[0]:
        worst = (slow, row)
  name = 'implementation=None vs the fastest single path, worst (L, causal)'
  if worst is None:
    out.append((name, '≤ 1.10×', 'not measured', '—'))
  else:
    slow, row = worst
    out.append((name, '≤ 1.10×',
                f'{slow:.2f}× (L={row["L"]}, '
                f'{"causal" if row["causal"] else "non-causal"}; None ran '
                f'{_ran_text(row["results"]["None"])})',
                'PASS' if slow <= 1.10 else 'FAIL'))
  return out


def _clip(text, limit=120):
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[:limit - 1] + '…'


def render_markdown(results):
  """The BENCHMARKS.md section of a run (between the markers)."""
  meta, peak = results['meta'], results['peak'] or {}
  dev, ver = meta['device'], meta['versions']
  sizes = meta['sizes']
  notes = []

  def note(text):
    text = _clip(text, 300)
    if text not in notes:
      notes.append(text)
    return f'[{notes.index(text) + 1}]'

  skipped_late = sum('budget' in str(r.get('skipped', ''))
                     for row in results['attention']
                     for r in row['results'].values())
  skipped_late += sum('budget' in str(c.get('skipped', ''))
                      for c in results['train'])
  command = ('bash benchmarks/device.sh --dry-run' if meta['dry_run']
             else 'bash benchmarks/device.sh')
  lines = [HEADER, '']
  if meta['dry_run']:
    lines += ['**Dry run on CPU** (`--dry-run`): tiny shapes and the `:smoke` '
              'configs, to check that the script runs. These numbers measure '
              'nothing.', '']
  lines += [
      f'Generated by `{command}` (method in `benchmarks/device.py`; numbers '
      'in its JSON, `benchmarks/device.json` by default).', '',
      f'- Run: {meta["date"]}, {meta.get("wall_s", 0) / 60:.1f} min of a '
      f'{meta["budget_s"] / 60:.1f}-min budget'
      + (f'; **stopped by {meta["interrupted"]}**'
         if meta.get('interrupted') else '')
      + (f'; {skipped_late} case(s) skipped when the budget ran out'
         if skipped_late else '') + '.',
      f'- Device: {dev["kind"]} ({dev["count"]} device(s), '
      f'{dev["memory_gib"]:.0f} GiB for JAX), jax backend {dev["platform"]}; '
      f'jax {ver["jax"]}, jaxlib {ver["jaxlib"]}, flax {ver["flax"]}, '
      f'torch {ver["torch"]}, Python {ver["python"]}.',
  ]
  if peak:
    torch_peak = (f', torch {_num(peak["torch_bfloat16"])}'
                  if peak.get('torch_bfloat16') else
                  f' (torch: {peak.get("torch_note", "not run")})')
    lines.append(
        f'- Matmul peak, bf16 {peak["n"]}³: jax {_num(peak["jax_bfloat16"])} '
        f'TFLOP/s{torch_peak}; float32 (jax default precision) '
        f'{_num(peak["jax_float32"])}. "% peak" and MFU divide by the larger '
        f'bf16 figure, **{_num(peak["peak"])} TFLOP/s**.')
  lines += [
      f'- Attention: q, k, v [B, L, N={sizes["heads"]}, H={sizes["head_dim"]}]'
      f' bfloat16, B = max(1, {sizes["tokens"]} / L); forward+backward = the '
      'output and the gradients w.r.t. q, k, v. Cells: median ms per call '
      '(TFLOP/s, % peak); TFLOP/s counts 4·B·N·L²·H forward, half when '
      'causal, ×3.5 with the backward, for every implementation alike.',
      '', '### Targets', '', '| target | wanted | achieved | result |',
      '|---|---|---|---|']
  for name, wanted, achieved, verdict in targets(results):
    shown = f'**{verdict}**' if verdict == 'FAIL' else verdict
    lines.append(f'| {name} | {wanted} | {achieved} | {shown} |')
  for causal in (True, False):
    rows = [r for r in results['attention'] if r['causal'] == causal]
    if not rows:
      continue
    lines += ['', f'### Attention forward+backward, bf16, '
              f'{"causal" if causal else "non-causal"}', '',
              '| L | B | ' + ' | '.join(_label(c) for c in COLUMNS)
              + ' | best JAX vs torch |',
              '|---:|---:|' + '---|' * (len(COLUMNS) + 1)]
    for row in rows:
      cells = []
      for impl in COLUMNS:
        r = row['results'].get(impl, {'skipped': 'not run'})
        if 'ms' in r:
          cell = (f'{_num(r["ms"])} ({_num(r["tflops"])}, '
                  f'{100 * r["peak_share"]:.0f}%)')
          if r.get('ran') != [impl] and impl in IMPLS:
            cell += f' → {_ran_text(r)}'
        elif 'error' in r:
          where = f'{impl}, L={row["L"]}'
          cell = f'error {note(where + ": " + r["error"])}'
        else:
          cell = f'— {note(r.get("skipped", "not run"))}'
        cells.append(cell)
      best, t = best_jax(row), row['results'].get('torch', {})
      speed = (f'{t["ms"] / best[1]["ms"]:.2f}× ({best[0]})'
               if best and 'ms' in t else '—')
      lines.append(f'| {row["L"]} | {row["B"]} | ' + ' | '.join(cells)
                   + f' | {speed} |')
  if results['train']:
    lines += ['', '### Train step', '',
              'The default configs\' step (`train_lib.Trainer.train_step`) on '
              'their own batches, the most frequent length bucket; tokens/s '
              'counts real tokens; MFU = compiled FLOPs (`cost_analysis`) / '
              'step time / the bf16 peak above, for both dtypes.', '',
              '| config | dtype | batch [B, L] | tokens/s | ms/step | '
              'GFLOP/step | TFLOP/s | MFU |',
              '|---|---|---|---:|---:|---:|---:|---:|']
    for case in results['train']:
      head = f'| {case["config"]} | {case["dtype"]} |'
      if 'tokens_per_s' in case:
        lines.append(
            f'{head} {"×".join(map(str, case["batch_shape"]))} | '
            f'{case["tokens_per_s"]:,.0f} | {_num(case["ms_per_step"])} | '
            f'{_num(case["flops_per_step"] / 1e9)} | {_num(case["tflops"])} '
            f'| {_num(100 * case["mfu"])}% |')
      else:
        why = case.get('error') or case.get('skipped') or 'not run'
        lines.append(f'{head} {"error" if "error" in case else "—"} '
                     f'{note(why)} | | | | | |')
  if notes:
    lines += ['', 'Notes:', '']
    lines += [f'{i}. {text}' for i, text in enumerate(notes, 1)]
  return '\n'.join(lines)


def _label(column):
  return {'None': 'None (auto)', 'torch': 'torch SDPA'}.get(column, column)


def _num(x):
  """Three significant digits, without an exponent below 1000."""
  return f'{x:,.0f}' if abs(x) >= 100 else f'{float(f"{x:.3g}"):g}'


def _ran_text(result):
  """What a JAX column ran, by the dispatch's own record."""
  return ', '.join(result.get('ran') or ['?'])


def splice(text, section):
  """`text` with the section between the markers set to `section`."""
  return sections.splice(text, section, BEGIN, END)


def write_markdown(path, results):
  if results['meta']['dry_run'] and (
      os.path.abspath(path) == os.path.join(ROOT, 'BENCHMARKS.md')):
    raise SystemExit('device.py: a dry run\'s numbers do not go into '
                     'BENCHMARKS.md; pass --markdown OTHER_FILE to see them.')
  text = ''
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  with open(path, 'w') as f:
    f.write(splice(text, render_markdown(results)))


def print_report(results):
  print()
  print(render_markdown(results))
  print()
  print('Targets:')
  for name, wanted, achieved, verdict in targets(results):
    print(f'  {verdict:4}  {name}: {achieved} (wanted {wanted})')


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='Usually run through benchmarks/device.sh.')
  parser.add_argument('--dry_run', '--dry-run', action='store_true',
                      help='CPU, tiny shapes, :smoke configs (1-2 min on 2 '
                      'cores, mostly compiling)')
  parser.add_argument('--out', default=None,
                      help='the JSON of the run, read by --report_only '
                      '(default benchmarks/device.json; a dry run\'s: '
                      'device_dry_run.json in the temporary directory)')
  parser.add_argument('--markdown', default=os.path.join(ROOT, 'BENCHMARKS.md'),
                      help='the file whose GPU section --write_markdown '
                      'rewrites')
  parser.add_argument('--write_markdown', action='store_true',
                      help='render the JSON into --markdown between the '
                      'markers')
  parser.add_argument('--report_only', action='store_true',
                      help='measure nothing: render --out')
  parser.add_argument('--budget_s', type=float, default=None,
                      help=f'seconds for the whole run (default '
                      f'{FULL["budget_s"]:.0f}; dry run {DRY["budget_s"]:.0f})')
  parser.add_argument('--lengths', default=None,
                      help='comma-separated L (default 1024..32768; dry run '
                      '128,256)')
  parser.add_argument('--causal', default='both',
                      choices=('both', 'causal', 'non-causal'),
                      help='which attention rows to run')
  parser.add_argument('--train', default=None,
                      help="comma-separated configs[:arg] for the train "
                      "steps ('' for none)")
  parser.add_argument('--dtypes', default=None,
                      help=f'comma-separated config.dtype values for the '
                      f'train steps (default {",".join(DTYPES)})')
  args = parser.parse_args(argv)
  if args.out is None:  # a dry run never overwrites a GPU run's numbers
    args.out = (os.path.join(tempfile.gettempdir(), 'device_dry_run.json')
                if args.dry_run else os.path.join(HERE, 'device.json'))

  if args.report_only:
    if not os.path.exists(args.out):
      raise SystemExit(f'device.py --report_only: no {args.out}; it is '
                       'written by a run of benchmarks/device.sh.')
    with open(args.out) as f:
      results = json.load(f)
  else:
    if args.dry_run and 'JAX_PLATFORMS' not in os.environ:
      jax.config.update('jax_platforms', 'cpu')  # before the first device use
    if not args.dry_run and _device_platform() != 'gpu':
      raise SystemExit(f'device.py: no GPU here (jax backend '
                       f'{_device_platform()!r}); use --dry-run on a CPU.')
    results = run(args, DRY if args.dry_run else FULL)
    print(f'wrote {args.out}')
  print_report(results)
  if args.write_markdown:
    write_markdown(args.markdown, results)
    print(f'wrote the GPU section of {args.markdown}')
  return results


if __name__ == '__main__':
  main()
