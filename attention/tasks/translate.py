"""Translation: data, loss, validation (alignments, AER) and test (BLEU, beams).

Attention a model exposes for plots and AER (its ``aux``):
  transformer  ``cross_attention`` [L, B, N, T, S]: every layer and head; the
               alignment candidates are each layer's head-average and every
               single head.
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
from jax.experimental import multihost_utils
import numpy as np
import optax

from attention import decoding
from attention import metrics as metrics_lib
from attention import models
from attention import plotting
from attention import tasks
from attention.data import translation


def alignment_candidates(aux: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Named target x source weight matrices [B, T, S] from a model's aux."""
  if 'alignment' in aux:
    return {'alpha': aux['alignment']}
  if 'cross_attention' in aux:
    weights_LBNTS = aux['cross_attention']
    out = {}
    for layer in range(weights_LBNTS.shape[0]):
      out[f'layer{layer}'] = weights_LBNTS[layer].mean(axis=1)
      for head in range(weights_LBNTS.shape[2]):
        out[f'layer{layer}/head{head}'] = weights_LBNTS[layer, :, head]
    return out
  return {}


class Task:
  """The translation task (see attention.tasks for the interface)."""

  train_keys = ('src', 'tgt_in', 'tgt_out', 'tgt_mask')
  eval_keys = train_keys + ('example', 'align')

  def __init__(self, config, workdir: str, trainer):
    self.config = config
    self.workdir = workdir
    self.trainer = trainer
    self.data = translation.load_translation(config.data, workdir)
    self.has_gold = self.data.train.alignments is not None
    self.model = models.build(
        config.model, src_vocab_size=self.data.src_vocab.size,
        tgt_vocab_size=self.data.tgt_vocab.size)
    self.eval_config = config.eval
    self._decoders = {}

  # --- training ---------------------------------------------------------

  def init_params(self, rng):
    src = jnp.zeros((1, 8), jnp.int32)
    tgt = jnp.zeros((1, 8), jnp.int32)
    return self.model.init(rng, src, tgt)['params']

  def _iterator(self, split, train: bool):
    return tasks.split_iterator(split, self.config, train)

  def train_iterator(self):
    return self._iterator(self.data.train, train=True)

  def loss_fn(self, params, batch, rng, train: bool):
    """Label-smoothed cross-entropy per real target token -> (loss, metrics)."""
    logits, _ = self.model.apply(
        {'params': params}, batch['src'], batch['tgt_in'],
        deterministic=not train, rngs={'dropout': rng} if train else None)
    return _token_metrics(logits, batch,
                          float(self.config.label_smoothing) if train else 0.)

  @functools.cached_property
  def _apply(self):
    return jax.jit(self.model.apply)

  @functools.cached_property
  def _eval_step(self):
    """Validation metrics of one batch, as on-device (sum, count) pairs."""
    def step(params, batch):
      logits, aux = self.model.apply({'params': params}, batch['src'],
                                     batch['tgt_in'])
      _, metrics = _token_metrics(logits, batch, 0.0)
      mask_BT = batch['tgt_mask']
      exact_B = jnp.all((jnp.argmax(logits, -1) == batch['tgt_out'])
                        | ~mask_BT, axis=-1)
      real_B = (batch['example'] >= 0).astype(jnp.float32)
      metrics['sentence_accuracy'] = ((exact_B * real_B).sum(), real_B.sum())
      for name, weights_BTS in alignment_candidates(aux).items():
        metrics[f'entropy/{name}'] = metrics_lib.attention_entropy_sums(
            weights_BTS, mask_BT)
        if self.has_gold:
          metrics[f'aer_counts/{name}'] = metrics_lib.alignment_counts(
              weights_BTS, batch['align'], mask_BT)
      return metrics
    return jax.jit(step)

  def _summed_metrics(self, params, split) -> dict[str, Any]:
    totals = None
    for host_batch in self._iterator(split, train=False):
      out = self._eval_step(params, self.trainer.to_device(host_batch,
                                                            self.eval_keys))
      out = jax.device_get(out)
      totals = out if totals is None else jax.tree.map(np.add, totals, out)
    return totals

  def _scalars(self, totals) -> dict[str, float]:
    scalars = {}
    aer = {}
    entropies = []
    for name, value in totals.items():
      if name.startswith('aer_counts/'):
        aer[name[len('aer_counts/'):]] = metrics_lib.aer_from_counts(
            np.asarray(value))
      elif name.startswith('entropy/'):
        entropies.append((name, value))
      else:
        scalars[name] = float(value[0]) / max(float(value[1]), 1e-9)
    if entropies:
      # One number: the mean over every candidate matrix's rows (for the
      # Transformer, over single heads, not the head-averages).
      singles = [v for n, v in entropies if '/head' in n or n.endswith('alpha')]
      chosen = singles or [v for _, v in entropies]
      scalars['attention_entropy'] = (sum(float(v[0]) for v in chosen) /
                                      max(sum(float(v[1]) for v in chosen), 1))
    if aer:
      layers = {k: v for k, v in aer.items() if '/head' not in k}
      heads = {k: v for k, v in aer.items() if '/head' in k}
      for name, value in layers.items():
        scalars[f'aer/{name}'] = value
      if heads:
        best = min(heads, key=heads.get)
        scalars['aer/best_head'] = heads[best]
        logging.info('best single head for AER: %s', best)
      scalars['aer'] = min(aer.values())
    return scalars

  def evaluate(self, params, step: int, writer) -> dict[str, float]:
    """Validation loss, accuracy, AER, entropy; alignment plots (process 0)."""
    scalars = self._scalars(self._summed_metrics(params,
                                                 self.data.validation))
    num = int(self.eval_config.num_alignment_examples)
    if num:
      split = self.data.validation
      rows = np.arange(min(num, len(split)))
      tgt = [split.tgt[i] for i in rows]
      images = self._plot_alignments(
          params, split, rows, tgt,
          os.path.join(self.workdir, 'alignments', f'step_{step}'))
      writer.write_images(step, images)
    return scalars

  def _plot_alignments(self, params, split, rows, tgt_ids, directory):
    """Teacher-forced attention of ``rows`` on targets ``tgt_ids``: PNG + npy."""
    # Room for the source, the gold target (collate writes it) and tgt_ids.
    length = int(max(max(len(split.src[i]) for i in rows),
                     max(len(split.tgt[i]) for i in rows),
                     max(len(t) for t in tgt_ids))) + 1
    batch = split.collate(rows, length)
    tgt_in = np.zeros_like(batch['tgt_in'])
    tgt_out = np.zeros_like(batch['tgt_out'])
    for r, t in enumerate(tgt_ids):
      t = np.asarray(t, np.int32)
      tgt_in[r, 0], tgt_in[r, 1:len(t) + 1] = 1, t
      tgt_out[r, :len(t)], tgt_out[r, len(t)] = t, 2
    _, aux = self._apply({'params': params}, batch['src'], tgt_in)
    candidates = {k: np.asarray(v) for k, v in alignment_candidates(aux).items()
                  if '/head' not in k}
    images = {}
    if jax.process_index() != 0 or not candidates:
      return images
    os.makedirs(directory, exist_ok=True)
    for r, i in enumerate(rows):
      src_len, tgt_len = len(split.src[i]) + 1, len(tgt_ids[r]) + 1
      src_tokens = self.data.src_vocab.tokens(batch['src'][r, :src_len])
      tgt_tokens = self.data.tgt_vocab.tokens(tgt_out[r, :tgt_len])
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

  def _decoder(self, beam_size: int, max_length: int):
    key = (beam_size, max_length)
    if key not in self._decoders:
      self._decoders[key] = decoding.make_decoder(
          self.model, beam_size=beam_size, max_length=max_length,
          alpha=float(self.eval_config.length_penalty))
    return self._decoders[key]

  def _decode(self, params, split, beam_size: int):
    """Decoded token ids of every example of ``split``, in order.

    Each batch may write up to ``eval.max_decode_length`` tokens, or, when
    that is 0, twice its longest source plus 10.
    """
    out = [None] * len(split)
    for host_batch in self._iterator(split, train=False):
      batch = self.trainer.to_device(host_batch, ('src', 'example'))
      max_length = int(self.eval_config.max_decode_length or
                       2 * batch['src'].shape[1] + 10)
      tokens, _ = self._decoder(beam_size, max_length)({'params': params},
                                                       batch['src'])
      tokens = multihost_utils.process_allgather(tokens, tiled=True)
      examples = multihost_utils.process_allgather(batch['example'],
                                                   tiled=True)
      for row, example in zip(np.asarray(tokens), np.asarray(examples)):
        if example >= 0:
          out[int(example)] = row
    return out

  def test(self, params, step: int) -> dict[str, Any]:
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
    totals = self._summed_metrics(params, split)
    teacher = self._scalars(totals)
    results: dict[str, Any] = {'token_accuracy': teacher['accuracy']}
    for name in ('aer', 'attention_entropy'):  # models with attention
      if name in teacher:
        results[name] = teacher[name]
    decoded = {}
    for prefix, beam in (('', 1), ('beam/', int(ec.beam_size))):
      ids = decoded[beam] = self._decode(params, split, beam)
      hyps = [self.data.tgt_vocab.decode(t) for t in ids]
      results[prefix + 'bleu'] = metrics_lib.bleu(hyps, references)
      results[prefix + 'chrf'] = metrics_lib.chrf(hyps, references)
      results[prefix + 'exact_match'] = metrics_lib.exact_match(hyps,
                                                                references)
      for metric in (metrics_lib.bleu, metrics_lib.exact_match):
        for split_by, names in (('length', buckets), ('train_range', seen)):
          for name, value in metrics_lib.by_bucket(metric, hyps, references,
                                                   names).items():
            results[f'{prefix}{metric.__name__}_by_{split_by}/{name}'] = value
      if jax.process_index() == 0:
        name = 'greedy' if beam == 1 else f'beam{beam}'
        path = os.path.join(self.workdir, f'translations_{name}.tsv')
        with open(path, 'w') as f:
          for s, h, r in zip(split.src_text, hyps, references):
            f.write(f'{s}\t{h}\t{r}\n')
    num = int(ec.num_alignment_examples)
    if num:
      rows = np.arange(min(num, len(split)))
      tgt_ids = [_strip(decoded[1][i]) for i in rows]
      self._plot_alignments(params, split, rows, tgt_ids,
                            os.path.join(self.workdir, 'alignments',
                                         f'test_step_{step}'))
    return results


  def translate(self, params, sentences, directory: str) -> list[str]:
    """Greedy translations of ``sentences``, with their alignment plots.

    Writes ``example<i>_<attention>.png`` and ``.npy`` into ``directory``
    (process 0; nothing for a model without attention).
    """
    src_ids = [np.asarray(self.data.src_vocab.encode(s), np.int32)
               for s in sentences]
    split = translation.TranslationSplit(
        src=src_ids, tgt=[np.zeros(0, np.int32)] * len(src_ids),
        src_text=list(sentences), tgt_text=[''] * len(src_ids))
    rows = np.arange(len(split))
    length = max(len(s) for s in src_ids) + 1
    src = split.collate(rows, length)['src']
    max_length = int(self.eval_config.max_decode_length or 2 * length + 10)
    tokens, _ = self._decoder(1, max_length)({'params': params}, src)
    tgt_ids = [_strip(t) for t in np.asarray(tokens)]
    self._plot_alignments(params, split, rows, tgt_ids, directory)
    return [self.data.tgt_vocab.decode(t) for t in np.asarray(tokens)]

  def alignment_misses(self, params, name: str | None = None
                       ) -> dict[str, Any]:
    """Where the argmax alignment misses the gold one (validation split).

    The breakdown behind the logged ``aer/<name>``, host-side. ``name`` is
    one of :func:`alignment_candidates`' keys: by default RNNsearch's 'alpha'
    or the Transformer's last layer ('layer<L-1>', head average).

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
    for batch in self._iterator(self.data.validation, train=False):
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
  eos = np.flatnonzero(ids == 2)
  return ids[:eos[0]] if eos.size else ids


def _with_eos(tokens, length):
  tokens = list(tokens)[:length]
  return tokens + ['</s>'] * (length - len(tokens))


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
