"""Page faults on XLA:CPU, and what transparent huge pages save.

  python benchmarks/page_faults.py                # attention calls
  python benchmarks/page_faults.py --train_step   # the translate train step

XLA:CPU gives each call of a compiled program a fresh temporary buffer. glibc
serves a buffer this large (over its 32 MiB mmap threshold) with a new mmap
and unmaps it when the call ends, so every call touches its temporaries
afresh: one minor page fault, and a page cleared by the kernel, per 4 KiB.
The chunked forward+backward's temporaries are 100-200 MiB (the operands
written once in their matmul layouts, the blocks' buffers), so a call takes
tens of thousands of faults. torch SDPA's kernel works in small per-thread
buffers and takes none.

With ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` in the environment at process
start, glibc asks for transparent huge pages (madvise) on the memory it maps,
and a 2 MiB page faults once. This script runs the same calls in child
processes with and without it, the children taking turns, and prints median
times, minor faults per call and the ratios side by side. With --train_step
the children are ``benchmarks/train_step.py`` runs instead (tokens/s of the
default translate Transformer's training loop, by attention layer). It needs
the
kernel's transparent huge pages set to 'madvise' or 'always'
(/sys/kernel/mm/transparent_hugepage/enabled), and glibc 2.35 or later.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = '--_child'
HUGETLB = 'glibc.malloc.hugetlb=1'
THP = '/sys/kernel/mm/transparent_hugepage/enabled'
# (implementation, causal, L) in the benchmark's shapes (attention_speed.py).
CONFIGS = (('chunked', True, 1024), ('torch', True, 1024),
           ('chunked', False, 2048), ('torch', False, 2048),
           ('xla', True, 512))
ROUNDS = 2  # Children per setting, alternating.
REPS = 7  # Timed calls per configuration in a child.


def label(impl, causal, L):
  return f'{impl}, {"causal" if causal else "non-causal"} L={L}'


def child():
  """Times every configuration here; prints one JSON line."""
  spec = importlib.util.spec_from_file_location(
      'attention_speed', os.path.join(HERE, 'attention_speed.py'))
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = {}
  for impl, causal, L in CONFIGS:
    if impl == 'torch' and bench.torch is None:
      continue
    run = bench.make_runner(impl, bench.batch_for(L), L, causal, 'fwd+bwd')
    run()
    run()
    times, faults = [], []
    for _ in range(REPS):
      f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      t0 = time.perf_counter()
      run()
      times.append(time.perf_counter() - t0)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    out[label(impl, causal, L)] = (float(np.median(times)),
                                   float(np.median(faults)))
  print(json.dumps(out), flush=True)


def run_child(hugetlb, command):
  """The child's stdout; `command` runs with or without the tunable."""
  env = dict(os.environ)
  env.pop('GLIBC_TUNABLES', None)
  if hugetlb:
    env['GLIBC_TUNABLES'] = HUGETLB
  done = subprocess.run([sys.executable] + command, env=env,
                        capture_output=True, text=True, check=False)
  if done.returncode:
    sys.exit(f'child (hugetlb={hugetlb}) failed:\n{done.stderr[-3000:]}')
  return done.stdout


def alternating(command, parse):
  """{hugetlb: [parse(stdout) per child]}, ROUNDS children per setting,
  the settings taking turns."""
  results = {False: [], True: []}
  for round_ in range(ROUNDS):
    for hugetlb in (False, True):
      print(f'  round {round_ + 1}/{ROUNDS}, hugetlb={hugetlb}...',
            flush=True)
      results[hugetlb].append(parse(run_child(hugetlb, command)))
  return results


def train_step_tokens(stdout):
  """{variant: tokens/s} from train_step.py's printed table."""
  tokens = {}
  for line in stdout.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) == 5 and cells[1].replace(',', '').isdigit():
      tokens[cells[0]] = float(cells[1].replace(',', ''))
  if not tokens:
    sys.exit(f'no train-step table in the child\'s output:\n{stdout[-2000:]}')
  return tokens


def compare_train_step():
  print('train_step.py with its defaults, one round per child', flush=True)
  results = alternating([os.path.join(HERE, 'train_step.py'), '--out', '',
                         '--rounds', '1'], train_step_tokens)
  print(f'{"train step, attention":22s} {"default tokens/s":>16s} '
        f'{"hugetlb tokens/s":>16s} {"hugetlb ÷ default":>17s}')
  for variant in results[False][0]:
    speed = [float(np.median([r[variant] for r in results[h]]))
             for h in (False, True)]
    print(f'{variant:22s} {speed[0]:16,.0f} {speed[1]:16,.0f} '
          f'{speed[1] / speed[0]:17.2f}')


def compare_attention():
  print('float32 fwd+bwd, N=8, H=64, B as in attention_speed.py', flush=True)
  results = alternating([os.path.abspath(__file__), CHILD],
                        lambda out: json.loads(out.strip().splitlines()[-1]))
  print(f'{"configuration":26s} {"default ms":>10s} {"faults":>7s} '
        f'{"hugetlb ms":>10s} {"faults":>7s} {"hugetlb ÷ default":>17s}')
  ms = {}
  for name in results[False][0]:
    row = []
    for hugetlb in (False, True):
      ms[(name, hugetlb)] = float(
          np.median([r[name][0] for r in results[hugetlb]])) * 1e3
      row += [ms[(name, hugetlb)],
              float(np.median([r[name][1] for r in results[hugetlb]]))]
    print(f'{name:26s} {row[0]:10.0f} {row[1]:7.0f} {row[2]:10.0f} '
          f'{row[3]:7.0f} {row[2] / row[0]:17.2f}')
  for causal, L in ((True, 1024), (False, 2048)):
    names = [label(impl, causal, L) for impl in ('torch', 'chunked')]
    if all((n, False) in ms for n in names):
      ratios = [ms[(names[0], h)] / ms[(names[1], h)] for h in (False, True)]
      print(f'torch ÷ chunked, {names[1].split(", ")[1]}: {ratios[0]:.2f} by '
            f'default, {ratios[1]:.2f} with hugetlb')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--train_step', action='store_true',
                      help='compare train_step.py runs instead')
  args = parser.parse_args()
  thp = 'absent'
  if os.path.exists(THP):
    with open(THP) as f:
      thp = f.read().strip()
  print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} '
        f'cores; glibc {platform.libc_ver()[1]}; transparent huge pages: '
        f'{thp}', flush=True)
  if '[never]' in thp:
    print('Transparent huge pages are off on this kernel: the setting '
          'cannot change anything here.')
  if args.train_step:
    compare_train_step()
  else:
    compare_attention()


if __name__ == '__main__':
  if CHILD in sys.argv:
    child()
  else:
    main()
