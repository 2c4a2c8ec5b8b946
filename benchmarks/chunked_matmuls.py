"""How fast could the chunked path be on XLA:CPU? A bound from its matmuls.

  python benchmarks/chunked_matmuls.py

Non-causal attention, float32, N=8, H=64, with the CPU defaults of
``attention/chunked.py`` (block sizes, one computation per core). The chunked
forward+backward issues seven kinds of block matmul (forward: logits q·kᵀ and
p·v; backward: the recomputed logits, dp, dv, dq and dk), each with the shapes
and operand layouts that chunked.py gives it. For each kind this script
measures XLA's rate on its own: a program of COPIES=16 independent matmuls,
the fastest of 30 calls (the kinds take turns; an optimistic rate, as a
bound should use). The bound is the time the whole forward+backward would
take if every matmul ran at that rate and nothing else (softmax, masking,
slicing, the sums of the partial gradients) cost anything. It prints the bound
next to the measured chunked and torch SDPA times (interleaved medians, one
process), so the ratio bound ÷ torch says how close pure JAX can come to the
fused kernel on this machine, whatever the rest of the code does.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import numpy as np

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # See attention.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from attention import chunked  # pylint: disable=g-import-not-at-top

# benchmarks/attention.py (its runners and constants), loaded under another
# name: `attention` is the package.
_SPEC = importlib.util.spec_from_file_location(
    'attention_benchmark',
    os.path.join(os.path.dirname(os.path.abspath(__file__)), 'attention.py'))
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)

# (name, einsum as chunked.py writes it, pass): letters B, K batch; H head
# dim; r query rows of a block; s keys of a block.
MATMULS = (
    ('logits', 'BKHr,BKHs->BKrs', 'fwd'),
    ('p·v', 'BKrs,BKsH->BKrH', 'fwd'),
    ('logitsᵀ', 'BKHs,BKHr->BKsr', 'bwd'),
    ('dpᵀ', 'BKHs,BKHr->BKsr', 'bwd'),
    ('dv', 'BKsr,BKrH->BKsH', 'bwd'),
    ('dqᵀ', 'BKHs,BKsr->BKHr', 'bwd'),
    ('dk', 'BKsr,BKrH->BKsH', 'bwd'),
)


COPIES = 16  # Independent matmuls per timed program.


def matmul_program(spec, sizes):
  """(run, GFLOP per run): COPIES independent matmuls of one kind."""
  operands = spec.split('->')[0].split(',')
  keys = jax.random.split(jax.random.key(0), 8)
  lhs = [jax.random.normal(keys[i], [sizes[c] for c in operands[0]])
         for i in range(4)]
  rhs = [jax.random.normal(keys[4 + i], [sizes[c] for c in operands[1]])
         for i in range(4)]
  program = jax.jit(lambda lhs, rhs: [jnp.einsum(spec, a, b) for a in lhs
                                      for b in rhs][:COPIES])
  jax.block_until_ready(program(lhs, rhs))
  gflop = COPIES * 2 * np.prod([sizes[c] for c in 'BKHrs']) / 1e9
  return lambda: jax.block_until_ready(program(lhs, rhs)), gflop


def bound(L, B, reps=30):
  """(seconds, per-kind rows) if every block matmul ran at its best rate.

  The kinds run in turns, one call each per round, and each keeps its
  fastest call (an optimistic rate, as a bound should use).
  """
  sizes = chunked.default_block_sizes(L, L, bench.HEAD_DIM, False, 'cpu')
  axis, chains = chunked._chain_split(  # pylint: disable=protected-access
      B, bench.N_HEADS, chunked.default_chains(B, bench.N_HEADS))
  b, k = (B // chains, bench.N_HEADS) if axis == 0 else (
      B, bench.N_HEADS // chains)
  kinds = []
  for name, spec, which in MATMULS:
    bq, bk = (sizes.q, sizes.k) if which == 'fwd' else (sizes.q_bwd,
                                                         sizes.k_bwd)
    dims = dict(B=b, K=k, H=bench.HEAD_DIM, r=bq, s=bk)
    tiles = chains * -(-L // bq) * -(-L // bk)
    run, gflop = matmul_program(spec, dims)
    kinds.append((name, which, f'{b}x{k} x [{bq}, {bk}]', tiles, run, gflop))
  best = [np.inf] * len(kinds)
  for _ in range(reps):
    for i, kind in enumerate(kinds):
      t0 = time.perf_counter()
      kind[4]()
      best[i] = min(best[i], time.perf_counter() - t0)
  rows, total = [], 0.0
  for (name, which, shape, tiles, _, gflop), seconds in zip(kinds, best):
    pass_seconds = tiles * seconds / COPIES
    rows.append((name, which, shape, gflop / seconds, pass_seconds))
    total += pass_seconds
  return total, rows


def main():
  if bench.torch is None:
    sys.exit('chunked_matmuls.py compares against torch SDPA: pip install '
             'torch (CPU build) first.')
  print(f'{bench._cpu_name()}, {os.cpu_count()} cores; jax '
        f'{jax.__version__}, torch {bench.torch.__version__}; non-causal '
        'fwd+bwd, float32, N=8, H=64', flush=True)
  for L in (1024, 2048):
    B = bench.batch_for(L)
    total, rows = bound(L, B)
    for name, which, shape, rate, seconds in rows:
      print(f'  L={L} {which} {name:8s} batch x [rows, keys] {shape}: '
            f'{rate:6.1f} GFLOP/s, {seconds * 1e3:6.1f} ms', flush=True)
    # Interleaved medians, as in attention.py.
    results = bench.bench_config(L, False, 'fwd+bwd', 7,
                                 ('chunked', 'torch'))['results']
    chunked_s, torch_s = (results[impl]['ms'] / 1e3
                          for impl in ('chunked', 'torch'))
    print(f'L={L}, B={B}: matmuls alone at those rates {total * 1e3:.0f} ms; '
          f'chunked {chunked_s * 1e3:.0f} ms; torch SDPA '
          f'{torch_s * 1e3:.0f} ms. bound/torch = {total / torch_s:.2f}, '
          f'chunked/bound = {chunked_s / total:.2f}', flush=True)


if __name__ == '__main__':
  main()
