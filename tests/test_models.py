"""Translation models and decoding: incremental decoding equals teacher forcing,
attention weights are distributions over real source tokens, beam search finds
the exhaustive optimum on a tiny vocabulary."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention import decoding
from attention.models import rnnencdec
from attention.models import rnnsearch
from attention.models import transformer

SRC = np.array([[5, 6, 7, 8, 2, 0], [9, 4, 2, 0, 0, 0]], np.int32)
TGT_IN = np.array([[1, 5, 6, 7, 8], [1, 9, 9, 4, 2]], np.int32)

MODELS = {
    'transformer': lambda v: transformer.Model(
        src_vocab_size=12, tgt_vocab_size=v, num_layers=2, d_model=16,
        num_heads=4, num_kv_heads=2, mlp_dim=32, dropout_rate=0.0),
    'transformer_learned_untied': lambda v: transformer.Model(
        src_vocab_size=12, tgt_vocab_size=v, num_layers=1, d_model=16,
        num_heads=2, mlp_dim=32, position='learned', max_length=8,
        tie_embeddings=False),
    'transformer_rope': lambda v: transformer.Model(
        src_vocab_size=12, tgt_vocab_size=v, num_layers=1, d_model=16,
        num_heads=2, mlp_dim=32, position='rope'),
    'rnnsearch': lambda v: rnnsearch.Model(
        src_vocab_size=12, tgt_vocab_size=v, embed_dim=8, hidden_dim=16,
        attention_dim=8, readout_dim=8),
    'rnnsearch_luong_shallow': lambda v: rnnsearch.Model(
        src_vocab_size=12, tgt_vocab_size=v, embed_dim=8, hidden_dim=16,
        score='multiplicative', deep_output=False),
    'rnnsearch_conditional': lambda v: rnnsearch.Model(
        src_vocab_size=12, tgt_vocab_size=v, embed_dim=8, hidden_dim=16,
        attention_dim=8, readout_dim=8, query='conditional'),
    'rnnencdec': lambda v: rnnencdec.Model(
        src_vocab_size=12, tgt_vocab_size=v, embed_dim=8, hidden_dim=16,
        readout_dim=8),
}


def init(name, vocab=10):
  model = MODELS[name](vocab)
  return model, model.init(jax.random.key(0), SRC, TGT_IN)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_incremental_decoding_equals_teacher_forcing(name):
  model, variables = init(name)
  logits, aux = model.apply(variables, SRC, TGT_IN)
  assert logits.shape == (2, 5, 10) and logits.dtype == jnp.float32
  decoder = model.clone(decode=True) if name.startswith('transformer') else model
  state, cache = decoder.apply(variables, SRC, 5, method='init_decode',
                               mutable=['cache'])
  step = jax.jit(lambda cache, state, token: decoder.apply(
      {**variables, **cache}, state, token, method='decode_step',
      mutable=['cache']))
  steps = []
  for t in range(TGT_IN.shape[1]):
    (step_logits, state), cache = step(cache, state, TGT_IN[:, t])
    steps.append(step_logits)
  np.testing.assert_allclose(np.stack(steps, 1), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name, key, shape', [
    ('transformer', 'cross_attention', (2, 2, 4, 5, 6)),
    ('rnnsearch', 'alignment', (2, 5, 6)),
])
def test_attention_is_a_distribution_over_real_source_tokens(name, key, shape):
  model, variables = init(name)
  _, aux = model.apply(variables, SRC, TGT_IN)
  weights = np.asarray(aux[key])
  assert weights.shape == shape
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  src_pad = SRC == 0
  batch1 = weights[:, 1] if weights.ndim == 5 else weights[1]
  assert np.all(batch1[..., src_pad[1]] == 0.0)


@pytest.mark.parametrize('name, sees_current_input', [
    ('rnnsearch', False), ('rnnsearch_conditional', True)])
def test_which_target_words_the_rnnsearch_query_has_read(name,
                                                         sees_current_input):
  # Step t's input token is y_{t-1}. The paper's query s_{t-1} has not read it
  # yet; the conditional GRU's query has.
  model, variables = init(name)
  changed = TGT_IN.copy()
  changed[:, 3] = 7
  alpha = model.apply(variables, SRC, TGT_IN)[1]['alignment']
  alpha_changed = model.apply(variables, SRC, changed)[1]['alignment']
  np.testing.assert_array_equal(alpha_changed[:, :3], alpha[:, :3])
  assert not np.allclose(alpha_changed[:, 4], alpha[:, 4])
  assert np.allclose(alpha_changed[:, 3], alpha[:, 3]) != sees_current_input


def test_rnnencdec_has_no_attention():
  model, variables = init('rnnencdec')
  _, aux = model.apply(variables, SRC, TGT_IN)
  assert aux == {}
  assert 'attention' not in variables['params']


def test_dropout_changes_training_outputs_only():
  model = transformer.Model(src_vocab_size=12, tgt_vocab_size=10,
                            num_layers=1, d_model=16, num_heads=2, mlp_dim=32,
                            dropout_rate=0.3)
  variables = model.init(jax.random.key(0), SRC, TGT_IN)
  eval1 = model.apply(variables, SRC, TGT_IN)[0]
  eval2 = model.apply(variables, SRC, TGT_IN)[0]
  train = model.apply(variables, SRC, TGT_IN, deterministic=False,
                      rngs={'dropout': jax.random.key(1)})[0]
  np.testing.assert_array_equal(eval1, eval2)
  assert not np.allclose(eval1, train)


@pytest.mark.parametrize('name', ['transformer', 'rnnsearch'])
def test_greedy_equals_argmax_loop(name):
  model, variables = init(name)
  tokens, _ = decoding.make_decoder(model, beam_size=1, max_length=6)(
      variables, SRC)
  # Reference: re-run the teacher-forced model on the growing prefix.
  prefix = np.ones((2, 1), np.int32)
  apply = jax.jit(model.apply)
  for _ in range(6):
    logits, _ = apply(variables, SRC, prefix)
    prefix = np.concatenate([prefix, np.argmax(logits[:, -1], -1)[:, None]], 1)
  want = prefix[:, 1:].copy()
  for row in want:  # after the first EOS the decoder writes PAD
    eos = np.flatnonzero(row == 2)
    if eos.size:
      row[eos[0] + 1:] = 0
  np.testing.assert_array_equal(tokens, want)


@pytest.mark.parametrize('name', ['transformer', 'rnnsearch'])
def test_beam_search_finds_the_exhaustive_best(name):
  vocab, length = 5, 3  # PAD BOS EOS UNK and one word
  model, variables = init(name, vocab)
  # A sharper random model, so hypotheses differ clearly.
  variables = jax.tree.map(lambda a: a * 3.0, variables)
  tokens, score = decoding.make_decoder(
      model, beam_size=vocab ** (length - 1), max_length=length, alpha=0.0)(
          variables, SRC)

  sequences = set()
  for seq in itertools.product(range(vocab), repeat=length):
    if 2 in seq:  # everything after EOS is PAD
      cut = seq.index(2) + 1
      seq = seq[:cut] + (0,) * (length - cut)
    sequences.add(seq)
  sequences = np.array(sorted(sequences), np.int32)
  tgt_in = np.concatenate([np.ones((len(sequences), 1), np.int32),
                           sequences[:, :-1]], 1)
  apply = jax.jit(model.apply)
  for b in range(2):
    src = np.repeat(SRC[b:b + 1], len(sequences), 0)
    logp = jax.nn.log_softmax(apply(variables, src, tgt_in)[0])
    token_logp = np.take_along_axis(np.asarray(logp), sequences[..., None],
                                    -1)[..., 0]
    after_eos = np.cumsum(sequences == 2, 1) - (sequences == 2) > 0
    totals = np.where(after_eos, 0.0, token_logp).sum(1)
    candidates = dict(zip(map(tuple, sequences), totals))
    best = max(candidates, key=candidates.get)
    assert tuple(np.asarray(tokens[b])) == best
    np.testing.assert_allclose(score[b], candidates[best], rtol=1e-4)


def test_bad_model_settings_are_clear_errors():
  with pytest.raises(ValueError, match="position must be one of"):
    transformer.Model(src_vocab_size=12, tgt_vocab_size=10,
                      position='rotary').init(jax.random.key(0), SRC, TGT_IN)
  with pytest.raises(ValueError, match='score must be one of'):
    rnnsearch.Model(src_vocab_size=12, tgt_vocab_size=10,
                    score='dot').init(jax.random.key(0), SRC, TGT_IN)
  with pytest.raises(ValueError, match='query must be one of'):
    rnnsearch.Model(src_vocab_size=12, tgt_vocab_size=10,
                    query='next').init(jax.random.key(0), SRC, TGT_IN)
  with pytest.raises(ValueError, match='exceeds max_length=4'):
    transformer.Model(src_vocab_size=12, tgt_vocab_size=10, position='learned',
                      max_length=4).init(jax.random.key(0), SRC, TGT_IN)
