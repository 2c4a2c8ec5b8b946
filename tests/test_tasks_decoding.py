"""Greedy and beam-search decoding: greedy equals an argmax loop over the
teacher-forced model, beam search finds the exhaustive optimum on a tiny
vocabulary."""

import functools
import itertools

import jax
import numpy as np
import pytest

from attention.tasks import decoding
from conftest import SRC
from conftest import tiny_model

PAD, BOS, EOS = 0, 1, 2  # Ids of conftest's tiny vocabulary.
IDS = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)


def decode(model, **kwargs):
  """beam_search jitted with its settings fixed: fn(variables, src_BS)."""
  return jax.jit(functools.partial(decoding.beam_search, model, **kwargs))


@pytest.mark.parametrize('name', ['transformer', 'rnnsearch'])
@pytest.mark.parametrize('bos, eos', [(BOS, EOS), (7, 4)])
def test_greedy_equals_argmax_loop(name, bos, eos):
  """The ids come in as arguments: (7, 4) starts with 7 and ends at 4."""
  model, variables = tiny_model(name)
  tokens, _ = decode(model, beam_size=1, max_length=6, bos_id=bos, eos_id=eos,
                     pad_id=PAD)(variables, SRC)
  # Reference: re-run the teacher-forced model on the growing prefix.
  prefix = np.full((2, 1), bos, np.int32)
  apply = jax.jit(model.apply)
  for _ in range(6):
    logits, _ = apply(variables, SRC, prefix)
    prefix = np.concatenate([prefix, np.argmax(logits[:, -1], -1)[:, None]], 1)
  want = prefix[:, 1:].copy()
  for row in want:  # after the first EOS the decoder writes PAD
    ends = np.flatnonzero(row == eos)
    if ends.size:
      row[ends[0] + 1:] = PAD
  np.testing.assert_array_equal(tokens, want)


@pytest.mark.parametrize('name', ['transformer', 'rnnsearch'])
def test_beam_search_finds_the_exhaustive_best(name):
  vocab, length = 5, 3  # PAD BOS EOS UNK and one word
  model, variables = tiny_model(name, vocab)
  # A sharper random model, so hypotheses differ clearly.
  variables = jax.tree.map(lambda a: a * 3.0, variables)
  tokens, score = decode(model, beam_size=vocab ** (length - 1),
                         max_length=length, alpha=0.0, **IDS)(variables, SRC)

  sequences = set()
  for seq in itertools.product(range(vocab), repeat=length):
    if EOS in seq:  # everything after EOS is PAD
      cut = seq.index(EOS) + 1
      seq = seq[:cut] + (PAD,) * (length - cut)
    sequences.add(seq)
  sequences = np.array(sorted(sequences), np.int32)
  tgt_in = np.concatenate([np.full((len(sequences), 1), BOS, np.int32),
                           sequences[:, :-1]], 1)
  apply = jax.jit(model.apply)
  for b in range(2):
    src = np.repeat(SRC[b:b + 1], len(sequences), 0)
    logp = jax.nn.log_softmax(apply(variables, src, tgt_in)[0])
    token_logp = np.take_along_axis(np.asarray(logp), sequences[..., None],
                                    -1)[..., 0]
    after_eos = np.cumsum(sequences == EOS, 1) - (sequences == EOS) > 0
    totals = np.where(after_eos, 0.0, token_logp).sum(1)
    candidates = dict(zip(map(tuple, sequences), totals))
    best = max(candidates, key=candidates.get)
    assert tuple(np.asarray(tokens[b])) == best
    np.testing.assert_allclose(score[b], candidates[best], rtol=1e-4)
