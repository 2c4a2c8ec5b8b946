"""The forward pass: an online softmax over key blocks, per query block.

Returns the output and the float32 log-sum-exp of each query row, from which
the backward pass (``backward.py``) recomputes each block's weights; both
schedules, 'unrolled' and 'loop'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attention.chunked import blocks


def _fwd_step(cfg, state, qT_BKHr, kT_BKHs, v_BKsH, bias, mask_bias, rng, t0,
              bt, k0, bs, causal, key_bias, index):
  """One online-softmax step: folds a key block into a query block's state."""
  m_BKr, l_BKr, acc_BKrH = state
  s_BKrs = blocks.einsum(cfg, 'BKHr,BKHs->BKrs', qT_BKHr, kT_BKHs)
  s_BKrs = blocks.mask_logits(cfg, s_BKrs, t0, bt, k0, bs, bias, mask_bias,
                              causal, key_bias, transposed=False)
  m_new_BKr = jnp.maximum(m_BKr, jnp.max(s_BKrs, axis=-1))
  # A row with no unmasked key so far keeps m = -inf: subtract 0 there, so
  # exp(-inf - 0) = 0 rather than exp(-inf + inf) = NaN.
  m_safe_BKr = jnp.where(m_new_BKr == -jnp.inf, 0.0, m_new_BKr)
  p_BKrs = jnp.exp(s_BKrs - m_safe_BKr[..., None])
  correction_BKr = jnp.exp(m_BKr - m_safe_BKr)
  l_new_BKr = l_BKr * correction_BKr + jnp.sum(p_BKrs, axis=-1)
  if rng is not None:
    keep_BKrs = blocks.dropout_keep(cfg, rng, index, p_BKrs.shape)
    p_BKrs = jnp.where(keep_BKrs, p_BKrs * (1.0 / (1.0 - cfg.dropout)), 0.0)
  pv_BKrH = blocks.einsum(cfg, 'BKrs,BKsH->BKrH',
                          p_BKrs.astype(v_BKsH.dtype), v_BKsH)
  return m_new_BKr, l_new_BKr, acc_BKrH * correction_BKr[..., None] + pv_BKrH


def _init_state(B, K, rows, Hv):
  return (jnp.full((B, K, rows), -jnp.inf, jnp.float32),
          jnp.zeros((B, K, rows), jnp.float32),
          jnp.zeros((B, K, rows, Hv), jnp.float32))


def _finish(state, dtype):
  """(out, lse) of a query block; rows that saw no key: 0 and lse = +inf."""
  m_BKr, l_BKr, acc_BKrH = state
  live_BKr = l_BKr > 0.0
  l_safe_BKr = jnp.where(live_BKr, l_BKr, 1.0)
  out_BKrH = jnp.where(live_BKr[..., None], acc_BKrH / l_safe_BKr[..., None],
                       0.0)
  lse_BKr = jnp.where(live_BKr, m_BKr + jnp.log(l_safe_BKr), jnp.inf)
  return out_BKrH.astype(dtype), lse_BKr


def _forward_unrolled(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  B, K = qT_BKHR.shape[:2]
  Hv, G, bq = v_BKSH.shape[-1], cfg.G, cfg.sizes.q
  token = None  # The last block's result: see blocks.after.
  outs, lses = [], []
  for i in range(-(-cfg.T // bq)):
    q0, bt = i * bq, min(bq, cfg.T - i * bq)
    qT_BKHr = blocks.after(token, qT_BKHR, q0 * G, bt * G, 3)
    state = _init_state(B, K, bt * G, Hv)
    for tile in blocks.row_tiles(cfg.T, cfg.S, bq, cfg.sizes.k, cfg.causal,
                                 False, i):
      k0, bs = tile.k0, tile.bs
      state = _fwd_step(cfg, state, qT_BKHr,
                        blocks.after(token, kT_BKHS, k0, bs, 3),
                        blocks.after(token, v_BKSH, k0, bs, 2), bias,
                        mask_bias, rng, q0, bt, k0, bs, tile.crosses_diagonal,
                        None, tile.index)
      token = state[1]
    out, lse = _finish(state, qT_BKHR.dtype)
    outs.append(out)
    lses.append(lse)
  return jnp.concatenate(outs, axis=2), jnp.concatenate(lses, axis=2)


def _padded(cfg, bq, bk, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias):
  Tp, Sp = -(-cfg.T // bq) * bq, -(-cfg.S // bk) * bk
  return (blocks.pad_to(qT_BKHR, 3, Tp * cfg.G),
          blocks.pad_to(kT_BKHS, 3, Sp), blocks.pad_to(v_BKSH, 2, Sp),
          blocks.pad_to(blocks.pad_to(bias, 2, Tp), 3, Sp),
          blocks.pad_to(blocks.pad_to(mask_bias, 2, Tp), 3, Sp))


def _forward_loop(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  B, K, _, R = qT_BKHR.shape
  Hv, G, bq, bk = v_BKSH.shape[-1], cfg.G, cfg.sizes.q, cfg.sizes.k
  nq, nk = -(-cfg.T // bq), -(-cfg.S // bk)
  qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias = _padded(
      cfg, bq, bk, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias)
  key_bias = blocks.key_padding_bias(cfg.S, bk)

  def q_block(i, carry):
    out_BKRH, lse_BKR = carry
    qT_BKHr = jax.lax.dynamic_slice_in_dim(qT_BKHR, i * bq * G, bq * G, 3)

    def k_block(masked):
      def body(j, state):
        kT_BKHs = jax.lax.dynamic_slice_in_dim(kT_BKHS, j * bk, bk, axis=3)
        v_BKsH = jax.lax.dynamic_slice_in_dim(v_BKSH, j * bk, bk, axis=2)
        return _fwd_step(cfg, state, qT_BKHr, kT_BKHs, v_BKsH, bias,
                         mask_bias, rng, i * bq, bq, j * bk, bk,
                         masked and cfg.causal, key_bias if masked else None,
                         i * nk + j)
      return body

    n_free, n_end = blocks.loop_ranges(cfg, bq, bk, i)
    state = _init_state(B, K, bq * G, Hv)
    state = jax.lax.fori_loop(0, n_free, k_block(False), state)
    state = jax.lax.fori_loop(n_free, n_end, k_block(True), state)
    out, lse = _finish(state, out_BKRH.dtype)
    return (jax.lax.dynamic_update_slice_in_dim(out_BKRH, out, i * bq * G, 2),
            jax.lax.dynamic_update_slice_in_dim(lse_BKR, lse, i * bq * G, 2))

  init = (jnp.zeros((B, K, nq * bq * G, Hv), qT_BKHR.dtype),
          jnp.zeros((B, K, nq * bq * G), jnp.float32))
  out_BKRH, lse_BKR = jax.lax.fori_loop(0, nq, q_block, init)
  return out_BKRH[:, :, :R], lse_BKR[:, :, :R]


def forward(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng):
  run = _forward_unrolled if cfg.schedule == 'unrolled' else _forward_loop
  return run(cfg, qT_BKHR, kT_BKHS, v_BKSH, bias, mask_bias, rng)
