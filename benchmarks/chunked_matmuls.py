"""How fast could the chunked path be on XLA:CPU? A floor from its parts.

  python benchmarks/chunked_matmuls.py

Float32, N=8, H=64, causal and not, with the CPU defaults of
``attention/chunked/`` (block sizes, one computation per core). A
pure-JAX flash attention does, per block, a few matmuls and a few passes over
the block's logits. The chunked forward+backward issues seven kinds of block
matmul (forward: logits q·kᵀ and p·v; backward: the recomputed logits, dp, dv,
dq and dk) and four such passes (forward: the row maximum, then the exp with
its row sum; backward: the exp of the recomputed logits, then
ds = p·(dp − delta)). For each kind this script measures XLA's rate on its
own, with the shapes and operand layouts that chunked/ gives it: a program
of COPIES=16 independent instances, the fastest of 30 calls (all kinds of
all configurations take turns; an optimistic rate, as a floor should use).
It adds them up over the pass's tiles (a causal tile that the diagonal cuts
counts by its area). The floor is the time that the forward (and the
forward+backward) would take if every part ran at its best rate and nothing
else (masking, slicing, summing the partial gradients, page faults, cores
left idle between operations) cost anything. It prints the floor next to the
measured chunked and torch SDPA times (interleaved medians, one process),
and the matmuls' time if every one of them ran at the rate of the fastest
kind. floor ÷ torch says how close pure JAX can come to torch's fused kernel
on this machine, whatever the rest of the code does.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import numpy as np

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # See attention_speed.py.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from attention import chunked  # pylint: disable=g-import-not-at-top
from attention.chunked import blocks  # pylint: disable=g-import-not-at-top
from attention.chunked import flash  # pylint: disable=g-import-not-at-top

# benchmarks/attention_speed.py (its runners and constants), loaded by path:
# benchmarks/ is not a package.
_SPEC = importlib.util.spec_from_file_location(
    'attention_speed',
    os.path.join(os.path.dirname(os.path.abspath(__file__)),
                 'attention_speed.py'))
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)

# (name, einsum as chunked/ writes it, pass): letters B, K batch; H head
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

# (name, function of (block, other block, row vector), pass) for the passes
# over a block that the online softmax and its gradient need, as chunked/
# writes them: forward blocks are [B, K, r, s], backward ones [B, K, s, r].
# The row maximum subtracts a row vector as well, so that the copies of a
# program differ (XLA would merge identical ones); it costs next to nothing
# in a pass that is bound by reading the block.
PASSES = (
    ('row max', lambda s, _, m: jnp.max(s - m[..., None], axis=-1), 'fwd'),
    ('exp, row sum', lambda s, _, m: (lambda p: (p, jnp.sum(p, axis=-1)))(
        jnp.exp(s - m[..., None])), 'fwd'),
    ('exp', lambda st, _, lse: jnp.exp(st - lse[:, :, None, :]), 'bwd'),
    ('ds', lambda pt, dpt, delta: pt * (dpt - delta[:, :, None, :]), 'bwd'),
)

COPIES = 16  # Independent instances per timed program.


def _copies(fn, xs, ys):
  """A runner of one program: fn over COPIES of the (x, y) pairs."""
  program = jax.jit(lambda xs, ys: [fn(x, y) for x in xs for y in ys][:COPIES])
  jax.block_until_ready(program(xs, ys))
  return lambda: jax.block_until_ready(program(xs, ys))


def _normals(seed, shape, count=4):
  keys = jax.random.split(jax.random.key(seed), count)
  return [jax.random.normal(key, shape) for key in keys]


def matmul_program(spec, dims):
  """(run, GFLOP per instance): COPIES independent matmuls of one kind."""
  lhs, rhs = (_normals(seed, [dims[c] for c in operand]) for seed, operand
              in enumerate(spec.split('->')[0].split(',')))
  gflop = 2 * np.prod([dims[c] for c in 'BKHrs']) / 1e9
  return _copies(lambda a, b: jnp.einsum(spec, a, b), lhs, rhs), gflop


def pass_program(fn, which, dims):
  """(run, None): COPIES independent passes of one kind over a block."""
  blocks = _normals(2, [dims[c] for c in ('BKsr' if which == 'bwd' else
                                            'BKrs')])
  rows = _normals(3, [dims['B'], dims['K'], dims['r']])
  # Each block pairs with the next one, for the passes that read two.
  pairs = [(blocks[i], blocks[(i + 1) % 4]) for i in range(4)]
  return _copies(lambda pair, row: fn(*pair, row), pairs, rows), None


def tile_areas(L, causal, bq, bk, ragged):
  """Sum of the pass's tile areas, in units of a full bq x bk tile."""
  return sum(
      (tile.bt - tile.row_off) * tile.bs / (bq * bk)
      for i in range(-(-L // bq))
      for tile in blocks.row_tiles(L, L, bq, bk, causal, ragged, i))


CONFIGS = ((False, 1024), (False, 2048), (True, 1024), (True, 2048))


def parts(L, B, causal):
  """The kinds of part of one forward+backward: (name, pass, what, dims,
  tiles), `tiles` in units of a full block, summed over the computations."""
  sizes = chunked.default_block_sizes(L, L, bench.HEAD_DIM, causal, 'cpu')
  axis, chains = flash._chain_split(  # pylint: disable=protected-access
      B, bench.N_HEADS, chunked.default_chains(B, bench.N_HEADS))
  b, k = (B // chains, bench.N_HEADS) if axis == 0 else (
      B, bench.N_HEADS // chains)
  rows = []
  for name, what, which in MATMULS + PASSES:
    bq, bk = (sizes.q, sizes.k) if which == 'fwd' else (sizes.q_bwd,
                                                         sizes.k_bwd)
    dims = (('B', b), ('K', k), ('H', bench.HEAD_DIM), ('r', bq), ('s', bk))
    # Backward tiles are ragged (no dropout here): see blocks.row_tiles.
    tiles = chains * tile_areas(L, causal, bq, bk, ragged=which == 'bwd')
    rows.append((name, which, what, dims, tiles))
  return rows


def best_seconds(programs, reps=30):
  """{key: fastest call} of every program, the programs taking turns."""
  best = dict.fromkeys(programs, np.inf)
  for _ in range(reps):
    for key, run in programs.items():
      t0 = time.perf_counter()
      run()
      best[key] = min(best[key], time.perf_counter() - t0)
  return best


def main():
  if bench.torch is None:
    sys.exit('chunked_matmuls.py compares against torch SDPA: pip install '
             'torch (CPU build) first.')
  print(f'{bench._cpu_name()}, {os.cpu_count()} cores; jax '
        f'{jax.__version__}, torch {bench.torch.__version__}; float32, N=8, '
        'H=64', flush=True)
  configs = {(causal, L): parts(L, bench.batch_for(L), causal)
             for causal, L in CONFIGS}
  # Each distinct (kind, shape) once, all timed in one round-robin, so that
  # a burst of load elsewhere slows every one of them alike.
  programs, gflops = {}, {}
  for rows in configs.values():
    for name, which, what, dims, _ in rows:
      key = (name, which, dims)
      if key not in programs:
        programs[key], gflops[key] = (
            matmul_program(what, dict(dims)) if isinstance(what, str)
            else pass_program(what, which, dict(dims)))
  best = best_seconds(programs)
  fastest = max(COPIES * gflops[key] / best[key] for key in programs
                if gflops[key] is not None)
  for (causal, L), rows in configs.items():
    B = bench.batch_for(L)
    what = f'{"causal" if causal else "non-causal"} L={L}, B={B}'
    floor = {'fwd': 0.0, 'bwd': 0.0}
    matmul_s = matmul_gflop = 0.0
    for name, which, _, dims, tiles in rows:
      key = (name, which, dims)
      seconds = tiles * best[key] / COPIES
      floor[which] += seconds
      shape = '{}x{} x [{}, {}]'.format(*(n for _, n in dims[:2] + dims[3:]))
      rate = ''
      if gflops[key] is not None:
        matmul_s += seconds
        matmul_gflop += tiles * gflops[key]
        rate = f'{COPIES * gflops[key] / best[key]:6.1f} GFLOP/s, '
      print(f'  {what} {which} {name:12s} batch x [rows, keys] {shape}: '
            f'{rate}{seconds * 1e3:6.1f} ms', flush=True)
    # Interleaved medians, as in attention_speed.py.
    ms = {mode: {impl: r['ms'] for impl, r in bench.bench_config(
        L, causal, mode, 7, ('chunked', 'torch'))['results'].items()}
          for mode in ('fwd', 'fwd+bwd')}
    total = (floor['fwd'] + floor['bwd']) * 1e3
    print(f'{what}: forward floor {floor["fwd"] * 1e3:.0f} ms, chunked '
          f'{ms["fwd"]["chunked"]:.0f} ms, torch SDPA {ms["fwd"]["torch"]:.0f} '
          f'ms (floor ÷ torch {floor["fwd"] * 1e3 / ms["fwd"]["torch"]:.2f}). '
          f'Forward+backward: matmuls all at the fastest kind\'s '
          f'{fastest:.0f} GFLOP/s {matmul_gflop / fastest * 1e3:.0f} ms, at '
          f'their own best rates '
          f'{matmul_s * 1e3:.0f} ms, with the softmax passes (the floor) '
          f'{total:.0f} ms, chunked {ms["fwd+bwd"]["chunked"]:.0f} ms, torch '
          f'SDPA {ms["fwd+bwd"]["torch"]:.0f} ms. Floor ÷ torch '
          f'{total / ms["fwd+bwd"]["torch"]:.2f}, chunked ÷ floor '
          f'{ms["fwd+bwd"]["chunked"] / total:.2f}', flush=True)


if __name__ == '__main__':
  main()
