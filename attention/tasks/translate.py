"""Translation: data, loss, validation (alignments, AER) and test (BLEU, beams).

Attention a model exposes for plots and AER (its ``aux``):
  transformer  ``cross_attention`` [num_layers, B, N, T, S]: every layer and
               head; the alignment candidates are each layer's head-average
               and every single head.
  rnnsearch    ``alignment`` [B, T, S]: Bahdanau's α.
  rnnencdec    nothing (no attention).
"""

from __future__ import annotations

import collections
import functools
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attention import models
from attention.data import config as data_config
from attention.data import pipeline
from attention.data import tokenizers
from attention.data import translation
from attention.tasks import decoding
from attention.tasks import metrics as metrics_lib
from attention.tasks import plotting


def alignment_candidates(aux: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Named target x source weight matrices [B, T, S] from a model's aux."""
  if 'alignment' in aux:
    return {'alpha': aux['alignment']}
  out = {}
  for layer, weights_BNTS in enumerate(aux.get('cross_attention', ())):
    out[f'layer{layer}'] = weights_BNTS.mean(axis=1)
    for head in range(weights_BNTS.shape[1]):
      out[f'layer{layer}/head{head}'] = weights_BNTS[:, head]
  return out


def single_maps(names) -> list[str]:
  """The candidates that are one attention each (not head averages)."""
  singles = [n for n in names if '/head' in n or n == 'alpha']
  return singles or list(names)


class Task:
  """The translation task (see attention.tasks for the interface)."""

  train_keys = ('src', 'tgt_in', 'tgt_out', 'tgt_mask')

  def __init__(self, config, workdir: str):
    self.config = config
    self.workdir = workdir
    # The toy vocabularies are the lexicon: translating a few sentences
    # (eval.py --sentence) then never generates the 200,000 pairs.
    if data_config.validate(config.data, 'translate').source == 'toy':
      self.src_vocab, self.tgt_vocab = translation.toy_vocabularies()
    else:
      self.src_vocab, self.tgt_vocab = self.data.src_vocab, self.data.tgt_vocab
    self.model = models.build(
        config.model, src_vocab_size=self.src_vocab.size,
        tgt_vocab_size=self.tgt_vocab.size, pad_id=tokenizers.PAD_ID,
        dtype=jnp.dtype(config.dtype))
    self.eval_config = config.eval

  @functools.cached_property
  def data(self) -> translation.TranslationData:
    """The splits, read (or generated) when first needed."""
    return translation.load_translation(self.config.data, self.workdir)

  @property
  def has_gold(self) -> bool:
    """Whether the data has gold alignments (the toy task)."""
    return self.data.train.alignments is not None

  # --- training ---------------------------------------------------------

  def init_params(self, rng):
    src = jnp.zeros((1, 8), jnp.int32)
    tgt = jnp.zeros((1, 8), jnp.int32)
    return self.model.init(rng, src, tgt)['params']

  def train_batches(self):
    return pipeline.train_iterator(self.data.train, self.config)

  def loss_fn(self, params, batch, rng, train: bool):
    """Label-smoothed cross-entropy per real target token -> (loss, metrics)."""
    logits, _ = self.model.apply(
        {'params': params}, batch['src'], batch['tgt_in'],
        deterministic=not train, rngs={'dropout': rng} if train else None)
    return _token_metrics(logits, batch,
                          float(self.config.label_smoothing) if train else 0.)

  # --- evaluation ---------------------------------------------------------

  def split(self, name: str) -> translation.TranslationSplit:
    splits = {'validation': self.data.validation, 'test': self.data.test}
    if name not in splits:
      raise ValueError(f'Unknown split {name!r}; valid: {sorted(splits)}.')
    return splits[name]

  def num_examples(self, split: str) -> int:
    return len(self.split(split))

  def eval_batches(self, split: str):
    return pipeline.eval_iterator(self.split(split), self.config)

  @functools.cached_property
  def _apply(self):
    return jax.jit(self.model.apply)

  def eval_step(self, params, batch):
    """Teacher-forced metrics of one batch: {name: (sum, count)}."""
    logits, aux = self.model.apply({'params': params}, batch['src'],
                                   batch['tgt_in'])
    _, metrics = _token_metrics(logits, batch, 0.0)
    mask_BT = batch['tgt_mask']
    exact_B = jnp.all((jnp.argmax(logits, -1) == batch['tgt_out'])
                      | ~mask_BT, axis=-1)
    real_B = (batch['example'] >= 0).astype(jnp.float32)
    metrics['sentence_accuracy'] = ((exact_B * real_B).sum(), real_B.sum())
    candidates = alignment_candidates(aux)
    if candidates:
      # One number: the mean row entropy of every single attention map (for
      # the Transformer, single heads, not the head averages).
      entropies = [metrics_lib.attention_entropy_sums(candidates[name],
                                                      mask_BT)
                   for name in single_maps(candidates)]
      metrics['attention_entropy'] = (sum(e[0] for e in entropies),
                                      sum(e[1] for e in entropies))
    if self.has_gold:
      for name, weights_BTS in candidates.items():
        metrics[f'aer/{name}'] = metrics_lib.alignment_error_sums(
            weights_BTS, batch['align'], mask_BT)
    return metrics

  def summarize(self, split: str, means: dict[str, float]) -> dict[str, float]:
    """Loss, accuracies, entropy; AER per layer, of the best head, and best."""
    del split
    scalars = {k: v for k, v in means.items() if not k.startswith('aer/')}
    aer = {k[len('aer/'):]: v for k, v in means.items()
           if k.startswith('aer/')}
    if aer:
      heads = {k: v for k, v in aer.items() if '/head' in k}
      for name, value in aer.items():
        if name not in heads:
          scalars[f'aer/{name}'] = value
      if heads:
        best = min(heads, key=heads.get)
        scalars['aer/best_head'] = heads[best]
        logging.info('best single head for AER: %s', best)
      scalars['aer'] = min(aer.values())
    return scalars

  def plots(self, params, split: str, directory: str):
    """Teacher-forced attention of the first examples of ``split``."""
    num = int(self.eval_config.num_alignment_examples)
    if not num:
      return {}
    examples = self.split(split)
    rows = np.arange(min(num, len(examples)))
    return self._plot_alignments(params, examples, rows,
                                 [examples.tgt[i] for i in rows], directory)

  def _plot_alignments(self, params, split, rows, tgt_ids, directory):
    """Teacher-forced attention of ``rows`` on ``tgt_ids``: PNG + npy."""
    # Room for the source, the gold target (collate writes it) and tgt_ids.
    length = int(max(max(len(split.src[i]) for i in rows),
                     max(len(split.tgt[i]) for i in rows),
                     max(len(t) for t in tgt_ids))) + 1
    batch = split.collate(rows, length)
    tgt_in = np.zeros_like(batch['tgt_in'])
    tgt_out = np.zeros_like(batch['tgt_out'])
    for r, t in enumerate(tgt_ids):
      t = np.asarray(t, np.int32)
      tgt_in[r, 0], tgt_in[r, 1:len(t) + 1] = tokenizers.BOS_ID, t
      tgt_out[r, :len(t)], tgt_out[r, len(t)] = t, tokenizers.EOS_ID
    _, aux = self._apply({'params': params}, batch['src'], tgt_in)
    candidates = {k: np.asarray(v) for k, v in alignment_candidates(aux).items()
                  if '/head' not in k}
    images = {}
    if jax.process_index() != 0 or not candidates:
      return images
    os.makedirs(directory, exist_ok=True)
    for r, i in enumerate(rows):
      src_len, tgt_len = len(split.src[i]) + 1, len(tgt_ids[r]) + 1
      src_tokens = self.src_vocab.tokens(batch['src'][r, :src_len])
      tgt_tokens = self.tgt_vocab.tokens(tgt_out[r, :tgt_len])
      src_tokens = _with_eos(src_tokens, src_len)
      tgt_tokens = _with_eos(tgt_tokens, tgt_len)
      for name, weights in candidates.items():
        matrix = weights[r, :tgt_len, :src_len]
        stem = f'example{int(i)}_{name.replace("/", "_")}'
        np.save(os.path.join(directory, stem + '.npy'), matrix)
        images[f'alignments/{stem}'] = plotting.attention_heatmap(
            matrix, src_tokens, tgt_tokens,
            title=f'{self.config.model.name} {name}, example {int(i)}',
            path=os.path.join(directory, stem + '.png'))
    return images

  # --- test (eval.py) -------------------------------------------------------

  def _decode(self, params, src_BS, beam_size: int):
    """Token ids [B, L]: each batch may write ``eval.max_decode_length``
    tokens, or, when that is 0, twice its longest source plus 10."""
    max_length = int(self.eval_config.max_decode_length or
                     2 * src_BS.shape[1] + 10)
    tokens, _ = decoding.beam_search(
        self.model, {'params': params}, src_BS, beam_size=beam_size,
        max_length=max_length, alpha=float(self.eval_config.length_penalty),
        bos_id=tokenizers.BOS_ID, eos_id=tokenizers.EOS_ID,
        pad_id=tokenizers.PAD_ID)
    return tokens

  def greedy(self, params, batch):
    """Greedy translations of a batch: token ids [B, L]."""
    return self._decode(params, batch['src'], 1)

  def beam(self, params, batch):
    """Beam-search translations (width ``eval.beam_size``): ids [B, L]."""
    return self._decode(params, batch['src'], int(self.eval_config.beam_size))

  def predictors(self):
    return {'greedy': self.greedy, 'beam': self.beam}

  def test(self, params, means, predictions, directory: str) -> dict[str, Any]:
    """Greedy and beam decoding of the test split; every documented metric."""
    split = self.data.test
    ec = self.eval_config
    references = list(split.tgt_text)
    src_lengths = np.array([len(s) for s in split.src])
    buckets = metrics_lib.length_buckets(src_lengths,
                                         tuple(ec.bleu_length_edges))
    # Sources up to the longest training source, and longer ones (the toy
    # test split reaches past the training range on purpose).
    longest_train = max((len(s) for s in self.data.train.src), default=0)
    seen = metrics_lib.length_buckets(src_lengths, (0, longest_train + 1))
    teacher = self.summarize('test', means)
    results: dict[str, Any] = {'token_accuracy': teacher['accuracy']}
    for name in ('aer', 'attention_entropy'):  # models with attention
      if name in teacher:
        results[name] = teacher[name]
    decoded = {}
    for prefix, name in (('', 'greedy'), ('beam/', 'beam')):
      ids = decoded[name] = [predictions[name][i] for i in range(len(split))]
      hyps = [self.tgt_vocab.decode(t) for t in ids]
      results[prefix + 'bleu'] = metrics_lib.bleu(hyps, references)
      results[prefix + 'chrf'] = metrics_lib.chrf(hyps, references)
      results[prefix + 'exact_match'] = metrics_lib.exact_match(hyps,
                                                                references)
      for metric in (metrics_lib.bleu, metrics_lib.exact_match):
        for split_by, names in (('length', buckets), ('train_range', seen)):
          for bucket, value in metrics_lib.by_bucket(metric, hyps, references,
                                                     names).items():
            results[f'{prefix}{metric.__name__}_by_{split_by}/{bucket}'] = (
                value)
      if jax.process_index() == 0:
        stem = 'greedy' if name == 'greedy' else f'beam{int(ec.beam_size)}'
        path = os.path.join(self.workdir, f'translations_{stem}.tsv')
        with open(path, 'w') as f:
          for s, h, r in zip(split.src_text, hyps, references):
            f.write(f'{s}\t{h}\t{r}\n')
    num = int(ec.num_alignment_examples)
    if num:
      rows = np.arange(min(num, len(split)))
      tgt_ids = [_strip(decoded['greedy'][i]) for i in rows]
      self._plot_alignments(params, split, rows, tgt_ids, directory)
    return results

  # --- commands -------------------------------------------------------------

  def translate(self, params, step: int, sentences) -> list[str]:
    """eval.py --sentence: greedy translations, with their alignment plots.

    Writes ``example<i>_<attention>.png`` and ``.npy`` into
    ``<workdir>/alignments/sentences_step_<step>/`` (process 0; nothing for a
    model without attention).
    """
    src_ids = [np.asarray(self.src_vocab.encode(s), np.int32)
               for s in sentences]
    split = translation.TranslationSplit(
        src=src_ids, tgt=[np.zeros(0, np.int32)] * len(src_ids),
        src_text=list(sentences), tgt_text=[''] * len(src_ids))
    rows = np.arange(len(split))
    length = max(len(s) for s in src_ids) + 1
    batch = split.collate(rows, length)
    tokens = np.asarray(jax.jit(self.greedy)(params, batch))
    self._plot_alignments(params, split, rows, [_strip(t) for t in tokens],
                          os.path.join(self.workdir, 'alignments',
                                       f'sentences_step_{step}'))
    return [self.tgt_vocab.decode(t) for t in tokens]

  def alignment_misses(self, params, name: str | None = None
                       ) -> dict[str, Any]:
    """Where the argmax alignment misses the gold one (validation split).

    The breakdown behind the logged ``aer/<name>``, host-side. ``name`` is
    one of :func:`alignment_candidates`' keys: by default RNNsearch's 'alpha'
    or the Transformer's last layer ('layer<num_layers - 1>', head average).

    Returns:
      {'totals', 'misses'}: Counters of scored positions and argmax misses
      per target word id; 'offsets': Counter of argmax minus the first gold
      source position, per miss; 'gold_links': the number of gold links.
      AER = 1 - 2 (S - M) / (S + gold_links), S and M the Counters' sums.
    """
    if not self.has_gold:
      raise ValueError('alignment_misses needs gold alignments (the toy '
                       "task has them: config.data.source='toy').")
    totals, misses, offsets = (collections.Counter() for _ in range(3))
    gold_links = 0
    for batch in self.eval_batches('validation'):
      _, aux = self._apply({'params': params}, batch['src'], batch['tgt_in'])
      candidates = alignment_candidates(aux)
      if name is None:
        layers = [k for k in candidates
                  if k.startswith('layer') and '/' not in k]
        name = 'alpha' if 'alpha' in candidates else f'layer{len(layers) - 1}'
      if name not in candidates:
        raise ValueError(f'alignment_misses: no alignment {name!r}; this '
                         f'model has {sorted(candidates)}.')
      weights_BTS = np.asarray(candidates[name])
      gold_BTS = np.asarray(batch['align'])
      scored_BT = (np.asarray(batch['tgt_mask']) & gold_BTS.any(-1)
                   & (np.asarray(batch['example']) >= 0)[:, None])
      argmax_BT = weights_BTS.argmax(-1)
      gold_links += int(gold_BTS[scored_BT].sum())
      for b, t in zip(*np.nonzero(scored_BT)):
        word = int(batch['tgt_out'][b, t])
        totals[word] += 1
        if not gold_BTS[b, t, argmax_BT[b, t]]:
          misses[word] += 1
          offsets[int(argmax_BT[b, t]
                      - np.flatnonzero(gold_BTS[b, t])[0])] += 1
    return {'name': name, 'totals': totals, 'misses': misses,
            'offsets': offsets, 'gold_links': gold_links}


def _strip(ids) -> np.ndarray:
  """Decoded ids up to (not including) EOS."""
  ids = np.asarray(ids)
  eos = np.flatnonzero(ids == tokenizers.EOS_ID)
  return ids[:eos[0]] if eos.size else ids


def _with_eos(tokens, length):
  tokens = list(tokens)[:length]
  eos = tokenizers.SPECIAL_TOKENS[tokenizers.EOS_ID]
  return tokens + [eos] * (length - len(tokens))


def _token_metrics(logits_BTV, batch, label_smoothing: float):
  """(mean loss, {'loss': (sum, tokens), 'accuracy': (sum, tokens)})."""
  targets = optax.smooth_labels(
      jax.nn.one_hot(batch['tgt_out'], logits_BTV.shape[-1]), label_smoothing)
  token_loss = optax.softmax_cross_entropy(logits_BTV, targets)
  mask = batch['tgt_mask'].astype(jnp.float32)
  tokens = mask.sum()
  loss_sum = (token_loss * mask).sum()
  correct = ((jnp.argmax(logits_BTV, -1) == batch['tgt_out']) * mask).sum()
  metrics = {'loss': (loss_sum, tokens), 'accuracy': (correct, tokens)}
  return loss_sum / jnp.maximum(tokens, 1.0), metrics
