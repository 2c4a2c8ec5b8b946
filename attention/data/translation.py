"""The translation task: `load_translation(config.data, workdir)`.

Returns a `TranslationData` with three `TranslationSplit`s (batch sources for
`attention.data.pipeline`) and the two vocabularies. A batch of a split is a
dict of NumPy arrays (B batch, L padded length; the same L for source and
target, set by the length bucket):

    src       int32 [B, L]     source ids, then EOS, then PAD (0)
    src_mask  bool  [B, L]     True on real source tokens (EOS included)
    tgt_in    int32 [B, L]     BOS, then target ids (decoder input)
    tgt_out   int32 [B, L]     target ids, then EOS (what to predict)
    tgt_mask  bool  [B, L]     True on real target positions
    src_len   int32 [B]        real source length (EOS included)
    tgt_len   int32 [B]        real target length (EOS included)
    example   int32 [B]        index of the example in its split; -1 = padding
    align     bool  [B, L, L]  toy only: gold alignment, target position x
                               source position (the shape of the attention
                               weights of a decoder query over source keys)

Position j of `tgt_out` is target word j, and position i of `src` is source
word i, so the toy alignments index these arrays directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import numpy as np

from attention.data import config as data_config
from attention.data import ragged
from attention.data import tfds_source  # Imports TFDS only when used.
from attention.data import tokenizers
from attention.data import toy_lexicon
from attention.data import toy_translation
from attention.data import translation_files

_TASK = 'translate'


@dataclasses.dataclass
class TranslationSplit:
  """One split: token ids, raw text and (toy task) gold alignments.

  Attributes:
    src: per example, int32 source ids (no BOS/EOS).
    tgt: per example, int32 target ids (no BOS/EOS).
    src_text: the source sentences as text.
    tgt_text: the target sentences as text (the BLEU references).
    alignments: toy task only: per example, int32 [num_links, 2] of
      (source word index, target word index).
  """
  src: list[np.ndarray]
  tgt: list[np.ndarray]
  src_text: list[str]
  tgt_text: list[str]
  alignments: list[np.ndarray] | None = None

  def __post_init__(self):
    n = len(self.src)
    for name in ('tgt', 'src_text', 'tgt_text') + (
        ('alignments',) if self.alignments is not None else ()):
      if len(getattr(self, name)) != n:
        raise ValueError(f'TranslationSplit.{name} has '
                         f'{len(getattr(self, name))} entries, src has {n}.')
    # Stored flat once, so that collate is a few gathers per batch.
    self._src = ragged.Ragged(self.src, np.int32)
    self._tgt = ragged.Ragged(self.tgt, np.int32)
    self._links = (ragged.Ragged(self.alignments, np.int64, item_shape=(2,))
                   if self.alignments is not None else None)
    self._src_len = (self._src.lengths + 1).astype(np.int32)
    self._tgt_len = (self._tgt.lengths + 1).astype(np.int32)

  def __len__(self) -> int:
    return len(self.src)

  @property
  def lengths(self) -> np.ndarray:
    """int32 [N]: padded length each pair needs (max of source and target)."""
    return np.maximum(self._src_len, self._tgt_len)

  def select(self, keep: np.ndarray) -> 'TranslationSplit':
    """The examples where bool [N] `keep` is True."""
    idx = np.flatnonzero(keep)
    return TranslationSplit(
        [self.src[i] for i in idx], [self.tgt[i] for i in idx],
        [self.src_text[i] for i in idx], [self.tgt_text[i] for i in idx],
        [self.alignments[i] for i in idx]
        if self.alignments is not None else None)

  def collate(self, rows: np.ndarray, pad_len: int) -> dict[str, np.ndarray]:
    """Padded arrays for examples `rows` (int [B]; -1 gives an empty row)."""
    rows = np.asarray(rows)
    real = np.flatnonzero(rows >= 0)
    src_len = np.zeros(len(rows), np.int32)
    tgt_len = np.zeros(len(rows), np.int32)
    src_len[real] = self._src_len[rows[real]]
    tgt_len[real] = self._tgt_len[rows[real]]
    need = int(max(src_len.max(), tgt_len.max())) if real.size else 0
    if need > pad_len:
      raise ValueError(f'An example needs {need} positions, more than the '
                       f'padded length {pad_len}.')
    src = self._src.padded(rows, pad_len)
    src[real, src_len[real] - 1] = tokenizers.EOS_ID
    tgt_out = self._tgt.padded(rows, pad_len)
    tgt_in = np.zeros_like(tgt_out)
    tgt_in[:, 1:] = tgt_out[:, :-1]
    tgt_in[real, 0] = tokenizers.BOS_ID
    tgt_out[real, tgt_len[real] - 1] = tokenizers.EOS_ID
    positions = np.arange(pad_len, dtype=np.int32)[None, :]
    batch = {
        'src': src, 'src_mask': positions < src_len[:, None],
        'tgt_in': tgt_in, 'tgt_out': tgt_out,
        'tgt_mask': positions < tgt_len[:, None],
        'src_len': src_len, 'tgt_len': tgt_len,
        'example': rows.astype(np.int32),
    }
    if self._links is not None:
      align = np.zeros((len(rows), pad_len, pad_len), bool)
      row, links = self._links.elements(rows)
      align[row, links[:, 1], links[:, 0]] = True
      batch['align'] = align
    return batch


@dataclasses.dataclass
class TranslationData:
  """Everything the translation experiments read.

  Attributes:
    train: training split.
    validation: validation split.
    test: test split.
    src_vocab: source vocabulary (`tokenizers.Vocabulary`).
    tgt_vocab: target vocabulary.
    info: what was loaded (source, sizes, skipped lines, ...), for logs.
  """
  train: TranslationSplit
  validation: TranslationSplit
  test: TranslationSplit
  src_vocab: Any
  tgt_vocab: Any
  info: dict[str, Any]

  @property
  def max_length(self) -> int:
    """The longest padded length over all splits (for position tables)."""
    return int(max(s.lengths.max(initial=0)
                   for s in (self.train, self.validation, self.test)))


def _encode(vocab, texts: Sequence[str]) -> list[np.ndarray]:
  if hasattr(vocab, 'encode_batch'):
    ids = vocab.encode_batch(texts)
  else:
    ids = [vocab.encode(t) for t in texts]
  return [np.asarray(x, np.int32) for x in ids]


def toy_vocabularies() -> tuple[tokenizers.WordVocab, tokenizers.WordVocab]:
  """(source, target) vocabularies of the toy task: its whole lexicon, so
  they need no generated pairs."""
  return (tokenizers.WordVocab(toy_lexicon.source_words()),
          tokenizers.WordVocab(toy_lexicon.target_words()))


def _toy(c) -> TranslationData:
  splits = toy_translation.generate_splits(
      seed=int(c.seed), num_train=int(c.num_train),
      num_validation=int(c.num_validation), num_test=int(c.num_test),
      min_len=int(c.min_len), max_train_len=int(c.max_train_len),
      max_test_len=int(c.max_test_len))
  src_vocab, tgt_vocab = toy_vocabularies()
  out = {}
  for name, pairs in splits.items():
    out[name] = TranslationSplit(
        src=[np.asarray(src_vocab.encode(s), np.int32) for s in pairs.src],
        tgt=[np.asarray(tgt_vocab.encode(t), np.int32) for t in pairs.tgt],
        src_text=[' '.join(s) for s in pairs.src],
        tgt_text=[' '.join(t) for t in pairs.tgt],
        alignments=pairs.alignments)
  info = {'source': 'toy', **{f'{k}/size': len(v) for k, v in out.items()}}
  return TranslationData(out['train'], out['validation'], out['test'],
                         src_vocab, tgt_vocab, info)


def _read_tsv(c) -> tuple[dict[str, translation_files.Pairs],
                                         dict[str, Any]]:
  pairs = translation_files.read_tsv(
      c.path, src_column=int(c.src_column),
      member=c.zip_member, on_bad_line=c.on_bad_line,
      encoding=c.encoding)
  splits = translation_files.split_pairs(
      pairs, validation_fraction=float(c.validation_fraction),
      test_fraction=float(c.test_fraction), seed=int(c.seed))
  limit = c.max_examples
  if limit is not None:
    splits['train'].src = splits['train'].src[:int(limit)]
    splits['train'].tgt = splits['train'].tgt[:int(limit)]
  info = {'source': 'tsv', 'path': c.path, 'skipped_lines': pairs.skipped}
  return splits, info


def _read_tfds(c) -> tuple[dict[str, translation_files.Pairs],
                                          dict[str, Any]]:
  name, data_dir = c.name, c.tfds_data_dir
  keys = (c.src_key, c.tgt_key)
  if None in keys:
    supervised = tfds_source.supervised_keys(name, data_dir)
    if supervised is None:
      raise ValueError(
          f'TFDS dataset {name!r} has no supervised keys; set '
          'config.data.src_key and config.data.tgt_key.')
    keys = tuple(k or s for k, s in zip(keys, supervised))
  available = tfds_source.split_names(name, data_dir)
  wanted = {'train': c.train_split, 'validation': c.validation_split,
            'test': c.test_split}
  out = {}
  for split, tfds_split in wanted.items():
    if available is not None and tfds_split.split('[')[0] not in available:
      if split == 'train':
        raise ValueError(f'TFDS dataset {name!r} has no split {tfds_split!r} '
                         f'(config.data.train_split); it has {available}.')
      logging.info('%s has no %r split; holding out part of train.', name,
                   tfds_split)
      continue
    src, tgt = tfds_source.read_translation(
        name, tfds_split, data_dir=data_dir, src_key=keys[0], tgt_key=keys[1],
        limit=c.max_examples if split == 'train' else None)
    out[split] = translation_files.Pairs(src, tgt)
  missing = [s for s in ('validation', 'test') if s not in out]
  if missing:
    carved = translation_files.split_pairs(
        out['train'],
        validation_fraction=float(c.validation_fraction)
        if 'validation' in missing else 0.0,
        test_fraction=float(c.test_fraction) if 'test' in missing else 0.0,
        seed=int(c.seed))
    out['train'] = carved['train']
    for s in missing:
      out[s] = carved[s]
  info = {'source': 'tfds', 'name': name, 'src_key': keys[0],
          'tgt_key': keys[1]}
  return out, info


def _subword(splits: dict[str, translation_files.Pairs], info: dict[str, Any],
             c, workdir: str | None) -> TranslationData:
  cache = os.path.join(workdir, 'vocab') if workdir else None
  vocabs = []
  for side in ('src', 'tgt'):
    vocabs.append(tokenizers.train_sentencepiece(
        getattr(splits['train'], side), int(c.vocab_size),
        model_type=c.spm_model_type, cache_dir=cache, name=side))
  out = {}
  for name, pairs in splits.items():
    out[name] = TranslationSplit(
        _encode(vocabs[0], pairs.src), _encode(vocabs[1], pairs.tgt),
        list(pairs.src), list(pairs.tgt))
  info.update({f'{k}/size': len(v) for k, v in out.items()})
  return TranslationData(out['train'], out['validation'], out['test'],
                         vocabs[0], vocabs[1], info)


def load_translation(config_data: Any,
                     workdir: str | None = None) -> TranslationData:
  """Loads the translation data that `config.data` names.

  Args:
    config_data: `config.data` (see attention/data/config.py for the keys);
      `source` is 'toy', 'tsv' or 'tfds'.
    workdir: where SentencePiece models are cached (`<workdir>/vocab/`), so a
      resumed run reuses them; None trains them in memory.

  Returns:
    The splits and vocabularies.

  Raises:
    ValueError: unknown source or key, bad values, malformed input.
    FileNotFoundError: missing file, or TFDS dataset not prepared.
  """
  c = data_config.validate(config_data, _TASK)
  if c.source == 'toy':
    data = _toy(c)
  else:
    splits, info = (_read_tsv if c.source == 'tsv' else _read_tfds)(c)
    for name in ('train', 'validation', 'test'):
      if not len(splits[name]):
        raise ValueError(
            f'The {name} split is empty ({len(splits["train"])} training '
            'pairs); use more data or larger config.data.validation_fraction '
            '/ test_fraction.')
    data = _subword(splits, info, c, workdir)
  max_len = c.max_len
  if max_len is not None:
    keep = data.train.lengths <= int(max_len)
    if not keep.any():
      raise ValueError(f'No training pair fits config.data.max_len={max_len}.')
    data.info['train/dropped_too_long'] = int((~keep).sum())
    data.train = data.train.select(keep)
    data.info['train/size'] = len(data.train)
  logging.info('Translation data: %s', data.info)
  return data
