"""Greedy and beam-search decoding for any translation model of attention.models.

A model decodes through two methods (see attention.models.transformer and
attention.models.rnnsearch):

  state = model.init_decode(src_BS, max_length)    # encodes, sizes caches
  logits_BV, state = model.decode_step(state, token_B)

Anything the model keeps in the 'cache' collection (the Transformer's key/value
caches) is threaded through as mutable variables. Every array in the state and
the cache whose leading axis is the batch is reordered when beams are
re-ranked; scalars (positions, cache indices) are shared by all beams.

The model decodes in its compute dtype (config.dtype: the Transformer's caches
then take it too); beam scores are float32, the logits cast before the
log-softmax.

The token ids (begin, end, padding) come in as arguments: the vocabulary
decides them (attention.data.tokenizers), not the decoder.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def length_penalty(lengths, alpha):
  """GNMT's ((5 + |Y|) / 6) ** alpha (Wu et al., 2016); 1 when alpha = 0."""
  return ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


def beam_search(model: nn.Module, variables, src_BS, *, beam_size: int,
                max_length: int, bos_id: int, eos_id: int, pad_id: int,
                alpha: float = 0.6):
  """Decodes ``src_BS`` with ``beam_size`` beams (1 = greedy).

  Hypotheses are ranked by summed log-probability during the search; the
  final choice among the surviving beams divides by :func:`length_penalty`.

  Args:
    model: a translation Model (the training instance; a Transformer is cloned
      with decode=True here).
    variables: ``{'params': ...}``.
    src_BS: int source tokens [B, S] (``pad_id`` = padding).
    beam_size: W >= 1.
    max_length: L, the most output tokens (EOS included).
    bos_id: the token that starts every hypothesis.
    eos_id: the token that ends one.
    pad_id: the token written after the end.
    alpha: length-penalty exponent.

  Returns:
    ``(tokens [B, L], log_probs [B])``: the best hypothesis, ending with EOS
    then PAD (no EOS if it ran out of length), and its summed log-probability.
  """
  if beam_size < 1 or max_length < 1:
    raise ValueError(f'beam_search: beam_size ({beam_size}) and max_length '
                     f'({max_length}) must be positive.')
  if 'decode' in getattr(model, '__dataclass_fields__', {}):
    model = model.clone(decode=True)
  B, W = src_BS.shape[0], beam_size
  src_rep = jnp.repeat(src_BS, W, axis=0)  # row b * W + w
  state, cache = model.apply(variables, src_rep, max_length,
                             method='init_decode', mutable=['cache'])
  tokens_BWL = jnp.full((B, W, max_length + 1), pad_id, jnp.int32)
  tokens_BWL = tokens_BWL.at[:, :, 0].set(bos_id)
  # Only beam 0 is live at the start, so the first step's W best are distinct.
  scores_BW = jnp.tile(jnp.where(jnp.arange(W) == 0, 0.0, -jnp.inf), (B, 1))
  finished_BW = jnp.zeros((B, W), bool)
  lengths_BW = jnp.zeros((B, W), jnp.int32)

  def reorder(beam_BW, x):
    if x.ndim == 0 or x.shape[0] != B * W:
      return x
    x = x.reshape((B, W) + x.shape[1:])
    x = jnp.take_along_axis(x, beam_BW.reshape((B, W) + (1,) * (x.ndim - 2)),
                            axis=1)
    return x.reshape((B * W,) + x.shape[2:])

  def cond(carry):
    t, _, _, finished_BW, _, _, _ = carry
    return jnp.logical_and(t < max_length, ~jnp.all(finished_BW))

  def body(carry):
    t, tokens_BWL, scores_BW, finished_BW, lengths_BW, state, cache = carry
    last_B = tokens_BWL[:, :, t].reshape(B * W)
    (logits, state), cache = model.apply(
        {**variables, **cache}, state, last_B, method='decode_step',
        mutable=['cache'])
    V = logits.shape[-1]
    logp_BWV = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(B, W, V)
    # A finished beam can only be extended by PAD, at no cost.
    pad_only_V = jnp.where(jnp.arange(V) == pad_id, 0.0, -jnp.inf)
    logp_BWV = jnp.where(finished_BW[:, :, None], pad_only_V[None, None],
                         logp_BWV)
    candidates = (scores_BW[:, :, None] + logp_BWV).reshape(B, W * V)
    scores_BW, index_BW = jax.lax.top_k(candidates, W)
    beam_BW, token_BW = index_BW // V, index_BW % V
    tokens_BWL = jnp.take_along_axis(tokens_BWL, beam_BW[:, :, None], axis=1)
    tokens_BWL = tokens_BWL.at[:, :, t + 1].set(token_BW)
    was_finished = jnp.take_along_axis(finished_BW, beam_BW, axis=1)
    lengths_BW = jnp.where(was_finished,
                           jnp.take_along_axis(lengths_BW, beam_BW, axis=1),
                           t + 1)
    finished_BW = was_finished | (token_BW == eos_id)
    reorder_fn = functools.partial(reorder, beam_BW)
    state = jax.tree.map(reorder_fn, state)
    cache = jax.tree.map(reorder_fn, cache)
    return t + 1, tokens_BWL, scores_BW, finished_BW, lengths_BW, state, cache

  carry = (jnp.zeros((), jnp.int32), tokens_BWL, scores_BW, finished_BW,
           lengths_BW, state, cache)
  _, tokens_BWL, scores_BW, finished_BW, lengths_BW, _, _ = jax.lax.while_loop(
      cond, body, carry)
  lengths_BW = jnp.where(finished_BW, lengths_BW, max_length)
  ranked_BW = scores_BW / length_penalty(lengths_BW, alpha)
  best_B1 = jnp.argmax(ranked_BW, axis=1)[:, None]
  best_tokens = jnp.take_along_axis(tokens_BWL, best_B1[:, :, None], axis=1)
  return best_tokens[:, 0, 1:], jnp.take_along_axis(scores_BW, best_B1, 1)[:, 0]

