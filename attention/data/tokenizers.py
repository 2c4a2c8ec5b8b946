"""Vocabularies: word-level (toy task) and SentencePiece (real text).

Both share one interface (`Vocabulary`) and one set of special ids, so models
and metrics never ask which one they hold:

    PAD_ID = 0   padding (masked out everywhere)
    BOS_ID = 1   start of the decoder input
    EOS_ID = 2   end of sequence (appended to sources and targets)
    UNK_ID = 3   unknown word / piece

`decode` cuts at the first EOS and drops PAD/BOS, and returns detokenised text:
the toy vocabulary joins words with spaces (the toy references are written that
way), SentencePiece restores the original spacing, so sacreBLEU can score the
output against the raw reference text.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from typing import Iterable, Protocol, Sequence

import numpy as np

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ('<pad>', '<s>', '</s>', '<unk>')


class Vocabulary(Protocol):
  """What the models, metrics and plots may rely on."""

  @property
  def size(self) -> int:
    """Number of ids, specials included (the embedding table size)."""

  def encode(self, text: str) -> list[int]:
    """Text to ids, without BOS/EOS."""

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Ids to detokenised text; stops at the first EOS, drops PAD and BOS."""

  def tokens(self, ids: Sequence[int] | np.ndarray) -> list[str]:
    """One readable string per id (for plot axes); nothing is dropped."""


def _cut(ids: Sequence[int] | np.ndarray) -> list[int]:
  """Drops PAD/BOS and everything from the first EOS on."""
  out = []
  for i in np.asarray(ids).reshape(-1).tolist():
    if i == EOS_ID:
      break
    if i not in (PAD_ID, BOS_ID):
      out.append(i)
  return out


class WordVocab:
  """A closed word-level vocabulary; text is split on whitespace.

  Attributes:
    words: the id-ordered list of tokens, specials first.
  """

  def __init__(self, words: Iterable[str]):
    words = list(words)
    clash = sorted(set(words) & set(SPECIAL_TOKENS))
    if clash:
      raise ValueError(f'words must not contain special tokens; got {clash}.')
    if len(set(words)) != len(words):
      raise ValueError('words must be unique.')
    self.words = list(SPECIAL_TOKENS) + words
    self._ids = {w: i for i, w in enumerate(self.words)}

  @property
  def size(self) -> int:
    return len(self.words)

  def encode(self, text: str | Sequence[str]) -> list[int]:
    words = text.split() if isinstance(text, str) else text
    return [self._ids.get(w, UNK_ID) for w in words]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return ' '.join(self.words[i] if 0 <= i < self.size else '<unk>'
                    for i in _cut(ids))

  def tokens(self, ids: Sequence[int] | np.ndarray) -> list[str]:
    return [self.words[i] if 0 <= i < self.size else '<unk>'
            for i in np.asarray(ids).reshape(-1).tolist()]


class SentencePieceVocab:
  """A trained SentencePiece model with the project's special ids."""

  def __init__(self, model_proto: bytes):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    got = (self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id(),
           self._sp.unk_id())
    if got != (PAD_ID, BOS_ID, EOS_ID, UNK_ID):
      raise ValueError(
          'SentencePiece model must use pad/bos/eos/unk ids '
          f'{(PAD_ID, BOS_ID, EOS_ID, UNK_ID)}; got {got}. Delete the cached '
          'model so that it is retrained.')

  @property
  def size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode(list(texts), num_threads=os.cpu_count() or 1)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self._sp.decode(_cut(ids))

  def tokens(self, ids: Sequence[int] | np.ndarray) -> list[str]:
    ids = np.asarray(ids).reshape(-1).tolist()
    return [self._sp.id_to_piece(i) if 0 <= i < self.size else '<unk>'
            for i in ids]


def train_sentencepiece(sentences: Sequence[str], vocab_size: int, *,
                        model_type: str = 'unigram',
                        cache_dir: str | None = None,
                        name: str = 'spm',
                        max_sentences: int = 1_000_000) -> SentencePieceVocab:
  """Trains (or loads from `cache_dir`) a SentencePiece model.

  The cache file name holds a hash of the training text and the settings, so a
  resumed run reuses the model of the first run, and a change of data or
  settings trains a new one instead of silently reusing a stale one.

  Args:
    sentences: training-split text only.
    vocab_size: number of pieces, specials included. Treated as an upper bound
      when the text is too small to fill it.
    model_type: 'unigram' or 'bpe'.
    cache_dir: where to keep `<name>-<hash>.model`; None keeps it in memory.
    name: file-name prefix (e.g. 'src', 'tgt').
    max_sentences: sample at most this many sentences (deterministically).

  Returns:
    The vocabulary.
  """
  if model_type not in ('unigram', 'bpe'):
    raise ValueError(
        f"config.data.spm_model_type must be 'unigram' or 'bpe', "
        f'got {model_type!r}.')
  if vocab_size < len(SPECIAL_TOKENS) + 1:
    raise ValueError(f'config.data.vocab_size must be > 4, got {vocab_size}.')
  if not sentences:
    raise ValueError('Cannot train SentencePiece on an empty training split.')
  if len(sentences) > max_sentences:
    keep = np.random.default_rng(0).choice(
        len(sentences), max_sentences, replace=False)
    sentences = [sentences[i] for i in np.sort(keep)]
  digest = hashlib.sha256()
  digest.update(f'{vocab_size}|{model_type}|v1\n'.encode())
  for s in sentences:
    digest.update(s.encode('utf-8', 'replace'))
    digest.update(b'\n')
  path = None
  if cache_dir:
    path = os.path.join(cache_dir, f'{name}-{digest.hexdigest()[:16]}.model')
    if os.path.exists(path):
      with open(path, 'rb') as f:
        proto = f.read()
      try:
        vocab = SentencePieceVocab(proto)
        logging.info('Reusing SentencePiece model %s', path)
        return vocab
      except Exception as e:  # pylint: disable=broad-except
        # A cut-off or damaged cache file: train the model again over it.
        logging.warning('The cached SentencePiece model %s cannot be read '
                        '(%s: %s); training it again.', path,
                        type(e).__name__, str(e).splitlines()[0][:200]
                        if str(e) else '')

  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  model = io.BytesIO()
  logging.info('Training SentencePiece (%s, %d pieces) on %d sentences',
               model_type, vocab_size, len(sentences))
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=model,
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=1.0,
      pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
      pad_piece=SPECIAL_TOKENS[0], bos_piece=SPECIAL_TOKENS[1],
      eos_piece=SPECIAL_TOKENS[2], unk_piece=SPECIAL_TOKENS[3],
      hard_vocab_limit=False,
      num_threads=1,  # One thread: the same text gives the same model.
      minloglevel=2,
  )
  proto = model.getvalue()
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    # Atomic: concurrent processes may write the same file; readers never see
    # a partial one.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix='.tmp')
    with os.fdopen(fd, 'wb') as f:
      f.write(proto)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    logging.info('Saved SentencePiece model %s', path)
  return SentencePieceVocab(proto)
