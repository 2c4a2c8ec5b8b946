"""Side-by-side attention benchmark: this project's paths against the peers.

  python benchmarks/attention_speed.py          # full run (about 15 min on 2 cores)
  python benchmarks/attention_speed.py --quick  # L in {128, 512, 1024}, fewer reps
  python benchmarks/attention_speed.py --report_only   # redraw from the JSON

Writes its measurements to benchmarks/attention_speed.json, the plot to
benchmarks/attention_speed.png, and its tables into BENCHMARKS.md between the
two marker comments BEGIN and END below (added at the end, before the
train-step section, if the file has none). Everything else in BENCHMARKS.md is
hand-written and kept as it is. (The file is not named attention.py: that name
would shadow the package when the script's folder comes first on sys.path.)

Implementations, all on the same inputs (float32, N=8 heads, H=64):
  chunked     attention.dot_product_attention(implementation='chunked')
  xla         attention.dot_product_attention(implementation='xla')
  None        attention.dot_product_attention(implementation=None)
  jax.nn      jax.nn.dot_product_attention
  flax        flax.linen.dot_product_attention (causal via a mask)
  torch       torch.nn.functional.scaled_dot_product_attention (if installed;
              an optional comparison, not a dependency of the package)

For each length, causal or not, and forward or forward+backward, the
implementations run in turns (one call each per round, in a fresh random
order each round) after a warm-up call, and each reports the median of its
rounds, so that load from other processes hits all of them alike. A
configuration runs at least --reps rounds, and more where calls are short
(enough for MIN_SECONDS of calls of its slowest implementation, at most
MAX_REPS): at L=128, medians of 5 rounds of one computation (the chunked
and None columns) differed by up to 18% on this machine. Ratios come
from one run. torch runs with OMP_WAIT_POLICY=PASSIVE so that its idle
threads do not spin on the CPU the next implementation needs.

Also measured: the machine's float32 matmul rate (a 4096³ matmul, best of 5),
the peak memory of each configuration (the rise of this process's resident
set over its level before the call, sampled every ~0.5 ms during one extra
call), and, in a fresh subprocess, the peak resident memory (VmHWM) of
chunked causal forward+backward at L=32768, B=1.

Batch sizes keep B·L at 8192 tokens (B=8 up to L=1024), so each row costs
about the same per token.

The file is one script of about 650 lines on purpose: the peers' adapters,
the interleaved timing, the memory probes and the report travel together, so
that `python benchmarks/attention_speed.py` is all a machine needs (no
benchmark package to install), and the JSON it writes is read back only by
its own --report_only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time

import numpy as np

# torch's OpenMP threads otherwise keep spinning for a while after each call,
# stealing the CPU from whichever implementation runs next (measured: it
# slowed the next one by up to 3x on 2 cores). Set before torch loads.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import flax.linen as nn  # pylint: disable=g-import-not-at-top

from attention import dot_product_attention  # pylint: disable=g-import-not-at-top,line-too-long
from benchmarks import sections  # pylint: disable=g-import-not-at-top

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:  # torch is optional.
  torch = None

N_HEADS, HEAD_DIM = 8, 64
IMPLS = ('chunked', 'xla', 'None', 'jax.nn', 'flax', 'torch')
OURS = ('chunked', 'xla', 'None')
FULL_MATRIX = ('xla', 'jax.nn', 'flax')
# Full-matrix implementations are skipped where [B, N, L, L] float32 is over
# this many bytes: forward+backward holds several such matrices, and they run
# 3-4x slower than the blockwise ones, which keeps the full run under ~45 min
# on 2 cores.
MAX_MATRIX_BYTES = 1 << 29
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def batch_for(length):
  return max(1, min(8, 8192 // length))


def model_flops(B, L, causal, mode):
  """Matmul FLOPs of attention: q·kᵀ and p·v forward (x3.5 with backward:
  flash-style backward = 5 matmuls incl. the recomputed logits); causal
  counts half the matrix. The same count for every implementation."""
  fwd = 4 * B * N_HEADS * L * L * HEAD_DIM * (0.5 if causal else 1.0)
  return fwd * (3.5 if mode == 'fwd+bwd' else 1.0)


# ----------------------------------------------------------------------------
# The callables: each returns a function of no arguments that runs one call
# and blocks until it is done.


def jax_fn(impl, causal):
  if impl in OURS:
    implementation = None if impl == 'None' else impl
    return lambda q, k, v: dot_product_attention(
        q, k, v, is_causal=causal, implementation=implementation)
  if impl == 'jax.nn':
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v,
                                                        is_causal=causal)
  if impl == 'flax':
    def flax_attention(q, k, v):
      mask = None
      if causal:
        L = q.shape[1]
        mask = jnp.tril(jnp.ones((L, L), bool))[None, None]
      return nn.dot_product_attention(q, k, v, mask=mask)
    return flax_attention
  raise ValueError(impl)


def make_runner(impl, B, L, causal, mode):
  shape = (B, L, N_HEADS, HEAD_DIM)
  if impl == 'torch':
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, N_HEADS, L, HEAD_DIM, generator=gen,
                           requires_grad=(mode == 'fwd+bwd'))
               for _ in range(3))
    cotangent = torch.randn(B, N_HEADS, L, HEAD_DIM, generator=gen)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if mode == 'fwd':
      def run():
        with torch.no_grad():
          sdpa(q, k, v, is_causal=causal)
    else:
      def run():
        for x in (q, k, v):
          x.grad = None
        sdpa(q, k, v, is_causal=causal).backward(cotangent)
    return run
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, cotangent = (jax.random.normal(key, shape) for key in keys)
  fn = jax_fn(impl, causal)
  if mode == 'fwd':
    compiled = jax.jit(fn)
  else:
    compiled = jax.jit(jax.grad(
        lambda q, k, v: jnp.sum(fn(q, k, v) * cotangent), (0, 1, 2)))
  return lambda: jax.block_until_ready(compiled(q, k, v))


# ----------------------------------------------------------------------------
# Measurements.


def _rss_bytes():
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def peak_rss_rise(run):
  """Peak rise of the resident set during one call, sampled every ~0.5 ms."""
  baseline, peak, done = _rss_bytes(), [0], [False]

  def sample():
    while not done[0]:
      peak[0] = max(peak[0], _rss_bytes())
      time.sleep(0.0005)

  thread = threading.Thread(target=sample)
  thread.start()
  try:
    run()
  finally:
    done[0] = True
    thread.join()
  return max(0, max(peak[0], _rss_bytes()) - baseline)


def matmul_peak(reps=5):
  """float32 GFLOP/s of a 4096³ matmul (best of `reps`), jax and torch."""
  n = 4096
  a = jax.random.normal(jax.random.key(0), (n, n))
  mm = jax.jit(lambda a: a @ a)
  jax.block_until_ready(mm(a))
  best = {}
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a))
    times.append(time.perf_counter() - t0)
  best['jax'] = 2 * n ** 3 / min(times) / 1e9
  if torch is not None:
    ta = torch.randn(n, n)
    ta @ ta
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      ta @ ta
      times.append(time.perf_counter() - t0)
    best['torch'] = 2 * n ** 3 / min(times) / 1e9
  return best


def load_snapshot():
  """Load average and the CPU share used by other processes over 2 s."""
  def stat():
    with open('/proc/stat') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle
  own0 = resource.getrusage(resource.RUSAGE_SELF)
  total0, idle0 = stat()
  time.sleep(2.0)
  total1, idle1 = stat()
  own1 = resource.getrusage(resource.RUSAGE_SELF)
  ticks = os.sysconf('SC_CLK_TCK')
  own = ((own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime))
  busy = (total1 - total0) - (idle1 - idle0)
  others = max(0.0, busy / ticks - own) / ((total1 - total0) / ticks)
  return {'loadavg': os.getloadavg(), 'busy_by_others': others}


MIN_SECONDS = 2.0  # Per implementation and configuration, when calls are short.
MAX_REPS = 41


def bench_config(L, causal, mode, reps, impls, min_seconds=MIN_SECONDS):
  """Times `impls` in turns: at least `reps` rounds, or as many (up to
  MAX_REPS) as take `min_seconds` of the slowest implementation's calls."""
  B = batch_for(L)
  runners, results = {}, {}
  for impl in impls:
    if impl == 'torch' and torch is None:
      continue
    if (impl in FULL_MATRIX
        and B * N_HEADS * L * L * 4 > MAX_MATRIX_BYTES):
      results[impl] = {'skipped': f'[B,N,L,L] float32 is '
                                  f'{B * N_HEADS * L * L * 4 / 2**30:.1f} GiB'}
      continue
    t0 = time.perf_counter()
    run = make_runner(impl, B, L, causal, mode)
    run()  # Compile and warm up.
    results[impl] = {'compile_s': time.perf_counter() - t0}
    runners[impl] = run
  slowest = 0.0
  for run in runners.values():
    t0 = time.perf_counter()
    run()
    slowest = max(slowest, time.perf_counter() - t0)
  if runners:
    reps = max(reps, min(MAX_REPS, math.ceil(min_seconds / slowest)))
  times = {impl: [] for impl in runners}
  order = list(runners)
  shuffle = np.random.default_rng(L * 4 + 2 * causal + (mode == 'fwd'))
  for _ in range(reps):
    for impl in shuffle.permutation(order):
      t0 = time.perf_counter()
      runners[impl]()
      times[impl].append(time.perf_counter() - t0)
  flops = model_flops(B, L, causal, mode)
  for impl, run in runners.items():
    median = float(np.median(times[impl]))
    results[impl].update(
        ms=median * 1e3, min_ms=min(times[impl]) * 1e3,
        gflops=flops / median / 1e9, peak_mb=peak_rss_rise(run) / 2**20)
  return {'L': L, 'B': B, 'causal': causal, 'mode': mode, 'reps': reps,
          'results': results}


LONG_PROBE = '--_long_memory_probe'


def long_memory_probe(L):
  """Runs in a fresh process: chunked causal fwd+bwd at B=1, N=8, H=64."""
  shape = (1, L, N_HEADS, HEAD_DIM)
  q, k, v = (jax.random.normal(key, shape)
             for key in jax.random.split(jax.random.key(0), 3))
  fn = jax.jit(jax.grad(lambda q, k, v: jnp.sum(dot_product_attention(
      q, k, v, is_causal=True, implementation='chunked')), (0, 1, 2)))
  t0 = time.perf_counter()
  grads = jax.block_until_ready(fn(q, k, v))
  seconds = time.perf_counter() - t0
  finite = all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
  # VmHWM, the peak resident set of this process image: ru_maxrss would carry
  # over the parent's peak (Linux keeps it across fork and exec).
  with open('/proc/self/status') as f:
    hwm = next(int(line.split()[1]) * 1024 for line in f
               if line.startswith('VmHWM:'))
  print(json.dumps({'L': L, 'seconds_incl_compile': seconds,
                    'peak_rss_bytes': hwm, 'finite': finite}))


def run_long_probe(L):
  out = subprocess.run([sys.executable, os.path.abspath(__file__), LONG_PROBE,
                        str(L)], capture_output=True, text=True, check=False)
  for line in out.stdout.splitlines()[::-1]:
    if line.startswith('{'):
      return json.loads(line)
  return {'L': L, 'error': (out.stderr or out.stdout)[-2000:]}


# ----------------------------------------------------------------------------
# Report.


def fmt_ms(r):
  if 'skipped' in r:
    return '—'
  return f'{r["ms"]:.1f}' if r['ms'] < 100 else f'{r["ms"]:.0f}'


def ratio(rows, L, causal, mode, num, den):
  for row in rows:
    if (row['L'], row['causal'], row['mode']) == (L, causal, mode):
      a, b = row['results'].get(num, {}), row['results'].get(den, {})
      if 'ms' in a and 'ms' in b:
        return b['ms'] / a['ms']
  return None


def targets(rows, lengths):
  """Achieved ratios for each target of the issue."""
  out = []
  fmt = lambda x: '—' if x is None else f'{x:.2f}×'
  for L in [L for L in lengths if L >= 1024]:
    t = ratio(rows, L, True, 'fwd+bwd', 'chunked', 'torch')
    j = ratio(rows, L, True, 'fwd+bwd', 'chunked', 'jax.nn')
    out.append((f'chunked causal fwd+bwd vs torch SDPA, L={L}', '≥ 1.0×',
                fmt(t), t is not None and t >= 1.0))
    if j is None:
      out.append((f'chunked causal fwd+bwd vs jax.nn, L={L}', '≥ 2×',
                  'not run: jax.nn skipped (its matrix is over '
                  f'{MAX_MATRIX_BYTES / 2**30:.1f} GiB)', None))
    else:
      out.append((f'chunked causal fwd+bwd vs jax.nn, L={L}', '≥ 2×', fmt(j),
                  j >= 2.0))
  for L in [L for L in lengths if L >= 2048]:
    t = ratio(rows, L, False, 'fwd+bwd', 'chunked', 'torch')
    out.append((f'chunked non-causal fwd+bwd vs torch SDPA, L={L}', '≥ 1.0×',
                fmt(t), t is not None and t >= 1.0))
  # implementation=None: the path it picks for these shapes (CPU: chunked),
  # timed as that path, against the faster of the project's single paths;
  # and its own column, a separate sample of the same computation.
  worst_pick, worst_measured = None, None
  for row in rows:
    res = row['results']
    singles = {i: res[i]['ms'] for i in ('chunked', 'xla')
               if 'ms' in res.get(i, {})}
    if not singles:
      continue
    best = min(singles.values())
    picked = picked_path(row)
    if picked in singles:
      slow = singles[picked] / best
      if worst_pick is None or slow > worst_pick[0]:
        worst_pick = (slow, row)
    if 'ms' in res.get('None', {}):
      slow = res['None']['ms'] / best
      if worst_measured is None or slow > worst_measured[0]:
        worst_measured = (slow, row)
  where = lambda row: (f'L={row["L"]}, '
                       f'{"causal" if row["causal"] else "non-causal"}, '
                       f'{row["mode"]}')
  if worst_pick:
    slow, row = worst_pick
    out.append(('implementation=None: time of the path it picks ÷ the '
                f'fastest single path, worst case ({where(row)})',
                '≤ 1.10', f'{slow:.2f}', slow <= 1.10))
  if worst_measured:
    slow, row = worst_measured
    out.append(('implementation=None, its own column ÷ the fastest single '
                f'path, worst case ({where(row)}); the same compiled '
                'computation as the picked path, so the excess is timing '
                'noise', '≤ 1.10', f'{slow:.2f}', slow <= 1.10))
  return out


def picked_path(row):
  """What implementation=None dispatches to for the row's shapes here."""
  from attention import dot_product  # pylint: disable=g-import-not-at-top
  shape = jax.ShapeDtypeStruct((row['B'], row['L'], N_HEADS, HEAD_DIM),
                               jnp.float32)
  return dot_product.choose_implementation(
      dot_product.current_platform(),
      dot_product.describe_call(shape, shape, shape, is_causal=row['causal']))


def write_report(path, meta, rows, long_probe, lengths):
  """Rewrites the generated part of the report at `path`; keeps the rest."""
  old = ''
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
  with open(path, 'w') as f:
    f.write(splice(old, report(meta, rows, long_probe, lengths)))


BEGIN = ('<!-- BEGIN generated by benchmarks/attention_speed.py; edits between '
         'BEGIN and END are overwritten -->')
END = '<!-- END generated by benchmarks/attention_speed.py -->'


def splice(old, generated):
  """`old` with the block between BEGIN and END set to `generated`."""
  return sections.splice(old, generated, BEGIN, END, empty='# Benchmarks\n\n')


def report(meta, rows, long_probe, lengths):
  """The generated markdown: the run, the targets, the tables, the plot."""
  # Columns follow the data (a report redrawn where torch is not installed
  # keeps the torch column of the run).
  impls = [i for i in IMPLS if any(i in row['results'] for row in rows)]
  peak = meta['matmul_peak_gflops']['jax']
  lines = [
      '## Attention speed (benchmarks/attention_speed.py)',
      '',
      'Generated by `python benchmarks/attention_speed.py` (method in that '
      "file's docstring; numbers in `benchmarks/attention_speed.json`).",
      '',
      f'- Run: {meta["date"]}'
      + (f' (resumed {meta["resumed"]} after L=1024, same machine)'
         if 'resumed' in meta else '')
      + f', {meta["wall_min"]:.1f} min.',
      f'- Machine: {meta["cpu"]}, {meta["cores"]} cores, '
      f'{meta["mem_gib"]:.0f} GiB; {meta["platform"]}.',
      f'- Load: load average {meta["load_before"]["loadavg"][0]:.2f} before / '
      f'{meta["load_after"]["loadavg"][0]:.2f} after; other processes used '
      f'{100 * meta["load_before"]["busy_by_others"]:.0f}% / '
      f'{100 * meta["load_after"]["busy_by_others"]:.0f}% of the CPUs in the '
      '2 s before / after the run.',
      f'- Versions: jax {meta.get("jax", jax.__version__)}, '
      f'flax {meta["flax"]}, torch {meta["torch"]}, '
      f'Python {meta.get("python", platform.python_version())}.',
      f'- Matmul peak (float32 4096³, best of 5): jax {peak:.0f} GFLOP/s'
      + (f', torch {meta["matmul_peak_gflops"]["torch"]:.0f} GFLOP/s'
         if 'torch' in meta['matmul_peak_gflops'] else '') + '.',
      '- Shapes: [B, L, N=8, H=64] float32, B = min(8, 8192 / L). '
      'fwd+bwd = gradients of sum(out · cotangent) w.r.t. q, k, v.',
      '- GFLOP/s counts the same matmul FLOPs for every implementation '
      '(4·B·N·L²·H forward, halved when causal; ×3.5 with the backward); '
      '"% peak" divides by the jax matmul peak above.',
      '- Peak MB: rise of the process resident set during one call over its '
      'level before it. — : skipped (the [B, N, L, L] float32 matrix alone '
      f'would exceed {MAX_MATRIX_BYTES / 2**30:.1f} GiB).',
      '',
  ]
  tgt = targets(rows, lengths)
  lines += ['### Targets (ratios from this run)', '',
            '| target | wanted | achieved | met |', '|---|---|---|---|']
  for name, want, got, ok in tgt:
    met = '—' if ok is None else ('yes' if ok else '**no**')
    lines.append(f'| {name} | {want} | {got} | {met} |')
  if long_probe:
    if 'error' in long_probe:
      lines.append(f'| L={long_probe["L"]}, B=1 causal fwd+bwd peak process '
                   f'memory | < 2 GB | failed: {long_probe["error"][-200:]} '
                   '| **no** |')
    else:
      gb = long_probe['peak_rss_bytes'] / 1e9
      lines.append(
          f'| L={long_probe["L"]}, B=1, N=8, H=64 chunked causal fwd+bwd, '
          'peak process memory (VmHWM of a fresh process, incl. the '
          'Python/JAX runtime and compilation) | < 2 GB | '
          f'{gb:.2f} GB ({long_probe["seconds_incl_compile"]:.0f} s incl. '
          f'compile; finite: {long_probe["finite"]}'
          + (f'; {long_probe["note"]}' if 'note' in long_probe else '')
          + ') | '
          f'{"yes" if gb < 2 and long_probe["finite"] else "**no**"} |')
  lines.append('| GPU: None picks cuDNN where supported; chunked vs cuDNN '
               '| report | not measured: no GPU in this run | — |')
  lines += ['', '### Times', '',
            'Median ms per call (GFLOP/s, % of matmul peak, peak MB).', '']
  for mode in ('fwd', 'fwd+bwd'):
    for causal in (True, False):
      lines += [f'#### {mode}, {"causal" if causal else "non-causal"}', '',
                '| L | B | ' + ' | '.join(impls) + ' | chunked ÷ torch | '
                'chunked ÷ jax.nn |',
                '|---' * (len(impls) + 4) + '|']
      for row in rows:
        if (row['mode'], row['causal']) != (mode, causal):
          continue
        cells = []
        for impl in impls:
          r = row['results'].get(impl, {})
          if 'ms' in r:
            cells.append(f'{fmt_ms(r)} ({r["gflops"]:.0f}, '
                         f'{100 * r["gflops"] / peak:.0f}%, '
                         f'{r["peak_mb"]:.0f})')
          else:
            cells.append('—')
        speed_t = ratio(rows, row['L'], causal, mode, 'chunked', 'torch')
        speed_j = ratio(rows, row['L'], causal, mode, 'chunked', 'jax.nn')
        speeds = ['—' if x is None else f'{x:.2f}×' for x in (speed_t,
                                                               speed_j)]
        lines.append(f'| {row["L"]} | {row["B"]} | '
                     + ' | '.join(cells + speeds) + ' |')
      lines.append('')
  lines += ['![times](benchmarks/attention_speed.png)']
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='L in {128, 512, 1024}, 3 rounds, no L=32768 probe')
  parser.add_argument('--lengths', default=None,
                      help='comma-separated lengths (default 128..8192)')
  parser.add_argument('--reps', type=int, default=None,
                      help='least rounds per configuration (default 5, '
                      '--quick 3)')
  parser.add_argument('--out', default=os.path.join(ROOT, 'BENCHMARKS.md'))
  parser.add_argument('--plot',
                      default=os.path.join(HERE, 'attention_speed.png'))
  parser.add_argument('--json',
                      default=os.path.join(HERE, 'attention_speed.json'))
  parser.add_argument('--long_length', type=int, default=32768)
  parser.add_argument('--resume', action='store_true',
                      help='keep the configurations already in --json')
  parser.add_argument('--report_only', action='store_true',
                      help='rewrite the report and plot from --json')
  args = parser.parse_args()
  if args.report_only:
    with open(args.json) as f:
      saved = json.load(f)
    lengths = sorted({r['L'] for r in saved['rows']})
    write_report(args.out, saved['meta'], saved['rows'],
                 saved.get('long_probe'), lengths)
    plot(saved['rows'], args.plot)
    print(f'wrote {args.out} and {args.plot}')
    return

  lengths = ([128, 512, 1024] if args.quick
             else [128, 512, 1024, 2048, 4096, 8192])
  if args.lengths:
    lengths = [int(x) for x in args.lengths.split(',')]
  start = time.time()
  done = {}
  if args.resume and os.path.exists(args.json):
    with open(args.json) as f:
      previous = json.load(f)
    done = {(r['L'], r['causal'], r['mode']): r for r in previous['rows']}
  meta = {
      'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
      'cpu': _cpu_name(), 'cores': os.cpu_count(),
      'mem_gib': os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
                 / 2**30,
      'platform': f'jax backend {jax.default_backend()}',
      'jax': jax.__version__, 'python': platform.python_version(),
      'flax': _version('flax'),
      'torch': torch.__version__ if torch is not None else 'not installed',
      'load_before': load_snapshot(),
  }
  if done:
    meta = previous['meta']
    meta['resumed'] = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
  else:
    meta['matmul_peak_gflops'] = matmul_peak()
  print(f'matmul peak: {meta["matmul_peak_gflops"]}', flush=True)
  rows = []
  for L in lengths:
    reps = args.reps or (3 if args.quick else 5)
    for causal in (True, False):
      for mode in ('fwd', 'fwd+bwd'):
        if (L, causal, mode) in done:
          rows.append(done[(L, causal, mode)])
          continue
        row = bench_config(L, causal, mode, reps, IMPLS)
        rows.append(row)
        summary = ', '.join(
            f'{i} {fmt_ms(r)}' for i, r in row['results'].items())
        print(f'L={L} causal={causal} {mode}: {summary}', flush=True)
        with open(args.json, 'w') as f:
          json.dump({'meta': meta, 'rows': rows}, f, indent=1)
  long_probe = None
  if not args.quick and args.long_length:
    long_probe = run_long_probe(args.long_length)
    print(f'long probe: {long_probe}', flush=True)
  meta['load_after'] = load_snapshot()
  meta['wall_min'] = (meta.get('wall_min', 0.0)
                      + (time.time() - start) / 60)
  with open(args.json, 'w') as f:
    json.dump({'meta': meta, 'rows': rows, 'long_probe': long_probe}, f,
              indent=1)
  write_report(args.out, meta, rows, long_probe, lengths)
  plot(rows, args.plot)
  print(f'wrote {args.out} and {args.plot}')


def plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
  for a, mode in enumerate(('fwd', 'fwd+bwd')):
    for c, causal in enumerate((True, False)):
      ax = axes[a][c]
      for impl in IMPLS:
        pts = [(row['L'], row['results'][impl]['ms'] / row['B'])
               for row in rows
               if (row['mode'], row['causal']) == (mode, causal)
               and 'ms' in row['results'].get(impl, {})]
        if pts:
          xs, ys = zip(*pts)
          ax.plot(xs, ys, marker='o', label=impl,
                  linewidth=2.5 if impl == 'chunked' else 1.2)
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_title(f'{mode}, {"causal" if causal else "non-causal"}')
      ax.set_xlabel('sequence length L')
      ax.set_ylabel('ms per sequence (median / B)')
      ax.grid(True, which='both', alpha=0.3)
  axes[0][0].legend()
  fig.suptitle('Attention on CPU, float32, N=8, H=64 (lower is better)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _cpu_name():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def _version(module):
  try:
    return __import__(module).__version__
  except (ImportError, AttributeError):
    return 'unknown'


if __name__ == '__main__':
  if len(sys.argv) == 3 and sys.argv[1] == LONG_PROBE:
    long_memory_probe(int(sys.argv[2]))
  else:
    main()
