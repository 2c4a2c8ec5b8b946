"""The backward pass: each block's weights recomputed from the saved
log-sum-exp, and the gradients of q, k, v and the bias summed over the blocks;
both schedules, 'unrolled' and 'loop'.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from attention.chunked import blocks


def _bwd_step(cfg, qT_BKHr, q_BKrH, kT_BKHs, vT_BKHs, do_BKrH, doT_BKHr,
              lse_BKr, delta_BKr, bias, mask_bias, rng, t0, bt, k0, bs, causal,
              key_bias, index):
  """Gradient contributions of one block: dqᵀ, dk, dv and d(logits)ᵀ.

  The logits are recomputed transposed, [B, K, s, r], and every operand comes
  in the layout that makes its matmul a fast one on XLA:CPU: the head dim
  major for the two logits-shaped products, the contraction major for the
  other three (dq is produced transposed, [B, K, H, r]).
  """
  st_BKsr = blocks.einsum(cfg, 'BKHs,BKHr->BKsr', kT_BKHs, qT_BKHr)
  st_BKsr = blocks.mask_logits(cfg, st_BKsr, t0, bt, k0, bs, bias,
                               mask_bias, causal, key_bias, transposed=True)
  pt_BKsr = jnp.exp(st_BKsr - lse_BKr[:, :, None, :])
  dpt_BKsr = blocks.einsum(cfg, 'BKHs,BKHr->BKsr', vT_BKHs, doT_BKHr)
  dropped_BKsr = pt_BKsr
  if rng is not None:
    B, K, s, r = pt_BKsr.shape
    keep_BKsr = blocks.dropout_keep(cfg, rng, index, (B, K, r, s)).transpose(
        0, 1, 3, 2)
    inverse_keep = 1.0 / (1.0 - cfg.dropout)
    dropped_BKsr = jnp.where(keep_BKsr, pt_BKsr * inverse_keep, 0.0)
    dpt_BKsr = jnp.where(keep_BKsr, dpt_BKsr * inverse_keep, 0.0)
  dv_BKsH = blocks.einsum(cfg, 'BKsr,BKrH->BKsH',
                          dropped_BKsr.astype(do_BKrH.dtype), do_BKrH)
  dst_BKsr = pt_BKsr * (dpt_BKsr - delta_BKr[:, :, None, :])
  ds_BKsr = dst_BKsr.astype(q_BKrH.dtype)
  dqT_BKHr = blocks.einsum(cfg, 'BKHs,BKsr->BKHr', kT_BKHs, ds_BKsr)
  dk_BKsH = blocks.einsum(cfg, 'BKsr,BKrH->BKsH', ds_BKsr, q_BKrH)
  return dqT_BKHr, dk_BKsH, dv_BKsH, dst_BKsr


def _backward_layouts(res, do_BKRH):
  """The saved tensors plus the other layouts that the backward matmuls read."""
  qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng, out_BKRH, lse_BKR = res
  delta_BKR = jnp.sum(do_BKRH.astype(jnp.float32)
                      * out_BKRH.astype(jnp.float32), axis=-1)
  layouts = (qT_BKHR, jnp.swapaxes(qT_BKHR, 2, 3), kT_BKHS,
             jnp.swapaxes(v_BKSH, 2, 3), do_BKRH, jnp.swapaxes(do_BKRH, 2, 3))
  return dict(zip(('qT', 'q', 'kT', 'vT', 'do', 'doT'), layouts), lse=lse_BKR,
              delta=delta_BKR, bias=bias, mask_bias=mask_bias, rng=rng,
              v=v_BKSH)


def _reduce_to(x, shape):
  """Sums the axes of x that `shape` broadcasts (size 1) down to size 1."""
  axes = tuple(a for a, (n, m) in enumerate(zip(shape, x.shape)) if n != m)
  return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _dbias_block(cfg, dst_BKsr, bt, bs):
  """d(logits)ᵀ [B, K, s, t·G] -> [b, n, t|1, s|1] of the bias's shape."""
  B, K = dst_BKsr.shape[:2]
  G = cfg.G
  d_BNts = (dst_BKsr.reshape(B, K, bs, bt, G).transpose(0, 1, 4, 3, 2)
            .reshape(B, K * G, bt, bs))
  b, n, t, s = cfg.bias_shape
  return _reduce_to(d_BNts, (b, n, bt if t > 1 else 1, bs if s > 1 else 1))


def _backward_unrolled(cfg, res, do_BKRH):
  x = _backward_layouts(res, do_BKRH)
  G, bq, bk = cfg.G, cfg.sizes.q_bwd, cfg.sizes.k_bwd
  B, K, H, _ = x['qT'].shape
  Hv = x['v'].shape[-1]
  ragged = not cfg.dropout
  nk = -(-cfg.S // bk)
  dqTs, dbias_rows = [], []
  dks, dvs = [[] for _ in range(nk)], [[] for _ in range(nk)]
  token = None  # The last block's result: see blocks.after.
  for i in range(-(-cfg.T // bq)):
    q0, bt = i * bq, min(bq, cfg.T - i * bq)
    dqT_BKHr, dbias_cols = None, []
    # The query side of the row, sliced once; ragged tiles take sub-slices.
    row = {name: blocks.after(token, x[name], q0 * G, bt * G, axis)
           for name, axis in (('qT', 3), ('q', 2), ('do', 2), ('doT', 3),
                              ('lse', 2), ('delta', 2))}
    for tile in blocks.row_tiles(cfg.T, cfg.S, bq, bk, cfg.causal, ragged, i):
      t0, k0, bs = q0 + tile.row_off, tile.k0, tile.bs
      r0 = tile.row_off * G
      sub = {name: jax.lax.slice_in_dim(a, r0, bt * G, axis=a.ndim - 1 if
                                        name in ('qT', 'doT', 'lse', 'delta')
                                        else 2) if r0 else a
             for name, a in row.items()}
      dqT, dk, dv, dst = _bwd_step(
          cfg, sub['qT'], sub['q'], blocks.after(token, x['kT'], k0, bs, 3),
          blocks.after(token, x['vT'], k0, bs, 3), sub['do'], sub['doT'],
          sub['lse'], sub['delta'], x['bias'], x['mask_bias'], x['rng'], t0,
          q0 + bt - t0, k0, bs, tile.crosses_diagonal, None, tile.index)
      token = dk
      dqT = blocks.pad_to(dqT, 3, bt * G, front=tile.row_off * G)
      dqT_BKHr = dqT if dqT_BKHr is None else dqT_BKHr + dqT
      dks[k0 // bk].append(dk)
      dvs[k0 // bk].append(dv)
      if cfg.bias_shape is not None:
        dbias = _dbias_block(cfg, dst, q0 + bt - t0, bs)
        dbias_cols.append(blocks.pad_to(dbias, 2, bt, front=tile.row_off))
    dqTs.append(dqT_BKHr)
    if cfg.bias_shape is not None:
      dbias_rows.append(_join_columns(cfg, dbias_cols))

  def assemble(parts, features):
    key_blocks = []
    for j in range(nk):
      size = min(bk, cfg.S - j * bk)
      total = None
      for part in parts[j]:  # A diagonal tile may end early: pad it.
        part = blocks.pad_to(part, 2, size)
        total = part if total is None else total + part
      if total is None:  # Causal with S > T: keys that no query sees.
        total = jnp.zeros((B, K, size, features), jnp.float32)
      key_blocks.append(total)
    return jnp.concatenate(key_blocks, axis=2)

  dbias = None
  if cfg.bias_shape is not None:
    dbias = _reduce_to(jnp.concatenate(dbias_rows, axis=2), cfg.bias_shape)
  return (jnp.concatenate(dqTs, axis=3),
          jnp.swapaxes(assemble(dks, H), 2, 3), assemble(dvs, Hv), dbias)


def _join_columns(cfg, cols):
  """A query block's dbias tiles joined along keys (zeros where skipped)."""
  if cfg.bias_shape[3] == 1:
    return functools.reduce(jnp.add, cols)
  return blocks.pad_to(jnp.concatenate(cols, axis=3), 3, cfg.S)


def _backward_loop(cfg, res, do_BKRH):
  x = _backward_layouts(res, do_BKRH)
  B, K, H, R = x['qT'].shape
  Hv, G, bq, bk = x['v'].shape[-1], cfg.G, cfg.sizes.q_bwd, cfg.sizes.k_bwd
  nq, nk = -(-cfg.T // bq), -(-cfg.S // bk)
  Rp, Sp = nq * bq * G, nk * bk
  for name, axis, size in (('qT', 3, Rp), ('q', 2, Rp), ('kT', 3, Sp),
                           ('vT', 3, Sp), ('do', 2, Rp), ('doT', 3, Rp),
                           ('lse', 2, Rp), ('delta', 2, Rp)):
    x[name] = blocks.pad_to(x[name], axis, size)
  for name in ('bias', 'mask_bias'):
    x[name] = blocks.pad_to(blocks.pad_to(x[name], 2, nq * bq), 3, Sp)
  key_bias = blocks.key_padding_bias(cfg.S, bk)
  with_bias = cfg.bias_shape is not None

  def q_block(i, carry):
    dqT_BKHR, dk_BKSH, dv_BKSH, dbias = carry
    r0, rows = i * bq * G, bq * G
    qT, doT = (jax.lax.dynamic_slice_in_dim(x[n], r0, rows, 3)
               for n in ('qT', 'doT'))
    q, do, lse, delta = (jax.lax.dynamic_slice_in_dim(x[n], r0, rows, 2)
                         for n in ('q', 'do', 'lse', 'delta'))

    def k_block(masked):
      def body(j, state):
        dqT_BKHr, dk_BKSH, dv_BKSH, dbias = state
        kT, vT = (jax.lax.dynamic_slice_in_dim(x[n], j * bk, bk, 3)
                  for n in ('kT', 'vT'))
        dqT, dk, dv, dst = _bwd_step(
            cfg, qT, q, kT, vT, do, doT, lse, delta, x['bias'],
            x['mask_bias'], x['rng'], i * bq, bq, j * bk, bk,
            masked and cfg.causal, key_bias if masked else None, i * nk + j)
        dk_BKSH = _add_at(dk_BKSH, dk, 2, j * bk)
        dv_BKSH = _add_at(dv_BKSH, dv, 2, j * bk)
        if with_bias:
          dbias = _add_at(dbias, _dbias_block(cfg, dst, bq, bk), 2, i * bq,
                          3, j * bk)
        return dqT_BKHr + dqT, dk_BKSH, dv_BKSH, dbias
      return body

    n_free, n_end = blocks.loop_ranges(cfg, bq, bk, i)
    state = (jnp.zeros((B, K, H, rows), jnp.float32), dk_BKSH, dv_BKSH,
             dbias)
    state = jax.lax.fori_loop(0, n_free, k_block(False), state)
    state = jax.lax.fori_loop(n_free, n_end, k_block(True), state)
    dqT, dk_BKSH, dv_BKSH, dbias = state
    dqT_BKHR = jax.lax.dynamic_update_slice_in_dim(dqT_BKHR, dqT, r0, 3)
    return dqT_BKHR, dk_BKSH, dv_BKSH, dbias

  dbias0 = None
  if with_bias:
    dbias0 = jnp.zeros(x['bias'].shape, jnp.float32)
  init = (jnp.zeros((B, K, H, Rp), jnp.float32),
          jnp.zeros((B, K, Sp, H), jnp.float32),
          jnp.zeros((B, K, Sp, Hv), jnp.float32), dbias0)
  dqT, dk, dv, dbias = jax.lax.fori_loop(0, nq, q_block, init)
  if with_bias:
    dbias = _reduce_to(
        blocks.slice_axis(blocks.slice_axis(dbias, 0, cfg.T, 2), 0, cfg.S, 3),
        cfg.bias_shape)
  return (dqT[..., :R], jnp.swapaxes(dk[:, :, :cfg.S], 2, 3),
          dv[:, :, :cfg.S], dbias)


def _add_at(x, update, *axes_and_starts):
  """x with `update` added at the given (axis, start) pairs; size-1 axes of x
  (broadcast) take the update as is."""
  starts = [0] * x.ndim
  for axis, start in zip(axes_and_starts[::2], axes_and_starts[1::2]):
    if x.shape[axis] > 1:
      starts[axis] = start
  starts = [jnp.asarray(s, jnp.int32) for s in starts]
  current = jax.lax.dynamic_slice(x, starts, update.shape)
  return jax.lax.dynamic_update_slice(x, current + update, starts)


def backward(cfg, res, do_BKRH):
  run = _backward_unrolled if cfg.schedule == 'unrolled' else _backward_loop
  return run(cfg, res, do_BKRH)
