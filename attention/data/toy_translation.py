"""Toy translation: English-like sentences into 'Toylian', with gold alignments.

A small synthetic grammar whose target language cannot be translated with a
diagonal (monotone) attention pattern. Starting from the seed sentence

    the cat walks on the street
    il gatto sulla strada cammino
    alignment (source, target): (0,0) (1,1) (3,2) (4,2) (5,3) (2,4)

the target language ('Toylian', Italian-flavoured) differs from the source by:

* Reordering. Adjectives follow the noun, in mirrored order ("the big red cat"
  -> "il gatto rosso grande"); the verb ends its clause, after the object,
  the prepositional phrases and the adverb (S V O PP ADV -> S O PP ADV V);
  a clause opened by 'because', 'while' or 'when' moves to the front of the
  sentence, followed by a comma ("C1 because C2" -> "perche C2' , C1'").
* One word to several. 'walked' -> 'ha camminato'; 'my' -> 'il mio';
  'near' -> 'vicino al'; 'quickly' -> 'in fretta'; 'breakfast' ->
  'prima colazione'.
* Several words to one. 'on the' -> 'sulla'; 'will walk' -> 'camminero';
  'does not' -> 'non'; 'ice cream' -> 'gelato'.
* Agreement at a distance. Articles, adjectives and contracted prepositions
  take the gender and number of their noun, which in the source can be several
  words later ("on the big old street" -> "sulla strada vecchia grande"); the
  clause-final verb takes the gender and number of the subject's head noun,
  which sits at the other end of the clause and may be followed by a
  prepositional phrase with a noun of another gender.

The source determines the target: no verb's past tense equals its base form
(with 'read', 'the cats read' is present or past, and the two translate
differently), so exact match can reach 100%.

Sentences are built to a sampled length (uniform in [min_len, max_len] source
words), so every length is equally represented. The test split draws lengths
up to `max_test_len`, beyond anything seen in training (`max_train_len`), to
measure quality by length. Validation and test source sentences never occur
in the training split.

Each example carries its gold word alignment as (source index, target index)
pairs over the words (no BOS/EOS). Every target word is aligned to at least one
source word; every source word is aligned to at least one target word.

The word lists live in attention.data.toy_lexicon. This file stays one piece
(a little over 500 lines): sampling a sentence, rendering it in both
languages and recording its alignment depend on each other at every step.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

import numpy as np

from attention.data import toy_lexicon as lex

# ---------------------------------------------------------------------------
# Sentence structure.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class _NP:
  noun: int
  plural: bool
  det: str
  adjs: list[int]
  pp: '_PP | None' = None

  def src_len(self) -> int:
    n = 1 + len(self.adjs) + len(_noun_src(self).split())
    return n + (self.pp.src_len() if self.pp else 0)

  @property
  def gender(self) -> str:
    return lex.NOUNS[self.noun][4]


@dataclasses.dataclass
class _PP:
  prep: str
  np: _NP

  def src_len(self) -> int:
    return 1 + self.np.src_len()


@dataclasses.dataclass
class _Clause:
  subj: _NP
  verb: int
  tense: str = 'present'  # 'present' | 'past' | 'future'.
  negated: bool = False
  obj: _NP | None = None
  pps: list[_PP] = dataclasses.field(default_factory=list)
  adverb: int | None = None

  def src_len(self) -> int:
    n = self.subj.src_len() + 1  # Subject and verb.
    if self.tense == 'future':
      n += 1  # 'will'.
    if self.negated:
      n += 1 if self.tense == 'future' else 2  # 'not' / 'does not'.
    n += self.obj.src_len() if self.obj else 0
    n += sum(pp.src_len() for pp in self.pps)
    return n + (self.adverb is not None)


def _noun_src(np_: _NP) -> str:
  return lex.NOUNS[np_.noun][1 if np_.plural else 0]


# ---------------------------------------------------------------------------
# Rendering: source words, then target words with their alignment links.
# ---------------------------------------------------------------------------


class _Renderer:
  """Linearises a sentence into source words and aligned target words."""

  def __init__(self):
    self.src: list[str] = []

  def emit(self, words: str) -> list[int]:
    positions = []
    for w in words.split():
      positions.append(len(self.src))
      self.src.append(w)
    return positions

  # Each `*_src` method appends source words and returns what the matching
  # `*_tgt` method needs: the source positions of the parts.

  def np_src(self, np_: _NP) -> dict:
    det = 'these' if (np_.det == 'this' and np_.plural) else np_.det
    pos = {'det': self.emit(det)[0]}
    pos['adjs'] = [self.emit(lex.ADJECTIVES[a][0])[0] for a in np_.adjs]
    pos['noun'] = self.emit(_noun_src(np_))
    pos['pp'] = self.pp_src(np_.pp) if np_.pp else None
    return pos

  def pp_src(self, pp: _PP) -> dict:
    return {'prep': self.emit(pp.prep)[0], 'np': self.np_src(pp.np)}

  def clause_src(self, c: _Clause) -> dict:
    pos = {'subj': self.np_src(c.subj)}
    base, third, past, _, _ = lex.VERBS[c.verb]
    third_person = not c.subj.plural
    if c.tense == 'future':
      pos['aux'] = self.emit('will')[0]
      pos['not'] = self.emit('not')[0] if c.negated else None
      pos['verb'] = self.emit(base)[0]
    elif c.negated:
      do = 'did' if c.tense == 'past' else ('does' if third_person else 'do')
      pos['aux'] = self.emit(do)[0]
      pos['not'] = self.emit('not')[0]
      pos['verb'] = self.emit(base)[0]
    else:
      pos['aux'] = pos['not'] = None
      word = past if c.tense == 'past' else (third if third_person else base)
      pos['verb'] = self.emit(word)[0]
    pos['obj'] = self.np_src(c.obj) if c.obj else None
    pos['pps'] = [self.pp_src(pp) for pp in c.pps]
    pos['adverb'] = (self.emit(lex.ADVERBS[c.adverb][0])
                     if c.adverb is not None else None)
    return pos

  @staticmethod
  def np_tgt(np_: _NP, pos: dict, prep: str | None = None,
             prep_pos: int | None = None) -> list[tuple[str, list[int]]]:
    """Target words of a noun phrase, with an optional preposition before."""
    out = []
    slot = lex.slot(np_.gender, np_.plural)
    det = pos['det']
    article = None  # The definite article, if the determiner yields one.
    if np_.det == 'the':
      article = lex.ARTICLE[slot]
      det_words = []
    elif np_.det == 'my':
      article = lex.ARTICLE[slot]
      det_words = [(lex.MY[slot], [det])]
    elif np_.det == 'a':
      det_words = [(lex.INDEFINITE[slot], [det])]
    elif np_.det == 'this':
      det_words = [(lex.THIS[slot], [det])]
    else:  # 'some'
      det_words = [(lex.SOME[slot], [det])]
    if prep is not None:
      before, contracted, plain = lex.PREPOSITIONS[prep]
      if before:
        out.append((before, [prep_pos]))
      if article is not None and contracted:
        out.append((contracted[slot], [prep_pos, det]))
        article = None
      else:
        out.append((plain, [prep_pos]))
    if article is not None:
      out.append((article, [det]))
    out += det_words
    tsg, tpl = lex.NOUNS[np_.noun][2:4]
    noun = tpl if np_.plural else tsg
    out += [(w, list(pos['noun'])) for w in noun.split()]
    for a, p in reversed(list(zip(np_.adjs, pos['adjs']))):
      out.append((lex.adjective_forms(lex.ADJECTIVES[a][1])[slot], [p]))
    if np_.pp:
      out += _Renderer.pp_tgt(np_.pp, pos['pp'])
    return out

  @staticmethod
  def pp_tgt(pp: _PP, pos: dict) -> list[tuple[str, list[int]]]:
    return _Renderer.np_tgt(pp.np, pos['np'], pp.prep, pos['prep'])

  @staticmethod
  def clause_tgt(c: _Clause, pos: dict) -> list[tuple[str, list[int]]]:
    out = _Renderer.np_tgt(c.subj, pos['subj'])
    if c.obj:
      out += _Renderer.np_tgt(c.obj, pos['obj'])
    for pp, p in zip(c.pps, pos['pps']):
      out += _Renderer.pp_tgt(pp, p)
    if c.adverb is not None:
      out += [(w, list(pos['adverb']))
              for w in lex.ADVERBS[c.adverb][1].split()]
    if c.negated:
      out.append(('non', [pos['not']]))
    slot = lex.slot(c.subj.gender, c.subj.plural)
    stem = lex.VERBS[c.verb][3]
    verb = pos['verb']
    if c.tense == 'future':
      out.append((stem + lex.FUTURE[slot], [pos['aux'], verb]))
    elif c.tense == 'past':
      aux = [pos['aux']] if c.negated else [verb]  # 'did' carries the tense.
      out.append((lex.AUX[int(c.subj.plural)], aux))
      out.append((stem + lex.PARTICIPLE[slot], [verb]))
    else:
      links = [verb] + ([pos['aux']] if c.negated else [])
      out.append((stem + lex.PRESENT[slot], sorted(links)))
    return out


def _render(clauses: list[_Clause], conjs: list[str]):
  """Source words, target words and the alignment of a sentence."""
  r = _Renderer()
  parts = []
  for i, c in enumerate(clauses):
    conj_pos = r.emit(conjs[i - 1])[0] if i else None
    parts.append((conj_pos, r.clause_src(c)))
  tgt = _Renderer.clause_tgt(clauses[0], parts[0][1])
  for i in range(1, len(clauses)):
    conj_pos, pos = parts[i]
    clause = _Renderer.clause_tgt(clauses[i], pos)
    coord = dict(lex.COORDINATORS).get(conjs[i - 1])
    if coord:
      tgt = tgt + [(coord, [conj_pos])] + clause
    else:
      sub = dict(lex.SUBORDINATORS)[conjs[i - 1]]
      tgt = [(sub, [conj_pos])] + clause + [(',', [conj_pos])] + tgt
  words = [w for w, _ in tgt]
  links = sorted((s, t) for t, (_, srcs) in enumerate(tgt) for s in srcs)
  return r.src, words, links


# ---------------------------------------------------------------------------
# Sampling to a target length.
# ---------------------------------------------------------------------------


class _Rng:
  """A fast random source built on `random.random()` alone.

  Python guarantees that `random.Random(seed).random()` yields the same
  sequence on every version and platform (unlike `randrange` or `choice`), so
  the generated data are the same byte for byte everywhere.
  """

  def __init__(self, seed: int):
    self._random = random.Random(seed).random

  def random(self) -> float:
    return self._random()

  def integers(self, low: int, high: int | None = None) -> int:
    """A uniform integer in [low, high) (or [0, low) with one argument)."""
    if high is None:
      low, high = 0, low
    return low + int(self._random() * (high - low))


def _new_np(rng: _Rng, allow_plural: bool = True) -> _NP:
  noun = int(rng.integers(len(lex.NOUNS)))
  # Multi-word nouns are rarer, so that their lengths do not dominate.
  while ' ' in lex.NOUNS[noun][0] and rng.random() < 0.5:
    noun = int(rng.integers(len(lex.NOUNS)))
  plural = bool(allow_plural and rng.random() < 0.3)
  if plural:
    det = ('the', 'the', 'the', 'my', 'this', 'some')[int(rng.integers(6))]
  else:
    det = ('the', 'the', 'the', 'a', 'my', 'this')[int(rng.integers(6))]
  return _NP(noun=noun, plural=plural, det=det, adjs=[])


def _sample_sentence(rng: _Rng, length: int):
  """Grows a random sentence until it has `length` source words (or close)."""
  max_clauses = max(1, min(4, (length + 2) // 7))
  n_clauses = int(rng.integers(1, max_clauses + 1))
  # Every clause needs at least 3 words, plus a conjunction between clauses.
  while n_clauses > 1 and 4 * n_clauses - 1 > length:
    n_clauses -= 1
  clauses = []
  for _ in range(n_clauses):
    clauses.append(_Clause(
        subj=_new_np(rng), verb=int(rng.integers(len(lex.VERBS))),
        tense='past' if rng.random() < 0.35 else 'present'))
  conjs = []
  for _ in range(n_clauses - 1):
    options = lex.COORDINATORS + lex.SUBORDINATORS
    conjs.append(options[int(rng.integers(len(options)))][0])

  def all_nps():
    for c in clauses:
      stack = [c.subj] + ([c.obj] if c.obj else []) + [pp.np for pp in c.pps]
      while stack:
        np_ = stack.pop()
        yield np_
        if np_.pp:
          stack.append(np_.pp.np)

  def total() -> int:
    return sum(c.src_len() for c in clauses) + len(conjs)

  current = total()
  for _ in range(200):
    budget = length - current
    if budget <= 0:
      break
    moves = []  # (name, cost)
    nps = list(all_nps())
    if any(len(n.adjs) < 3 for n in nps):
      moves += [('adj', 1)] * 3
    if any(c.adverb is None for c in clauses):
      moves.append(('adverb', 1))
    if any(c.tense == 'present' for c in clauses):
      moves.append(('future', 1))
    if any(not c.negated for c in clauses):
      moves.append(('negate', 2))
    if any(c.obj is None for c in clauses):
      moves += [('object', 2)] * 2
    if any(len(c.pps) < 2 for c in clauses):
      moves += [('clause_pp', 3)] * 2
    if any(n.pp is None for n in nps):
      moves.append(('noun_pp', 3))
    fitting = [m for m in moves if m[1] <= budget]
    if not fitting:
      break
    move = fitting[int(rng.integers(len(fitting)))][0]
    if move == 'adj':
      np_ = [n for n in nps if len(n.adjs) < 3]
      np_ = np_[int(rng.integers(len(np_)))]
      choices = [a for a in range(len(lex.ADJECTIVES)) if a not in np_.adjs]
      np_.adjs.append(choices[int(rng.integers(len(choices)))])
    elif move == 'adverb':
      cs = [c for c in clauses if c.adverb is None]
      adverb = int(rng.integers(len(lex.ADVERBS)))
      cs[int(rng.integers(len(cs)))].adverb = adverb
    elif move == 'future':
      cs = [c for c in clauses if c.tense == 'present']
      cs[int(rng.integers(len(cs)))].tense = 'future'
    elif move == 'negate':
      cs = [c for c in clauses if not c.negated]
      cs[int(rng.integers(len(cs)))].negated = True
    elif move == 'object':
      cs = [c for c in clauses if c.obj is None]
      c = cs[int(rng.integers(len(cs)))]
      c.obj = _new_np(rng)
      if not lex.VERBS[c.verb][4]:
        transitive = [i for i, v in enumerate(lex.VERBS) if v[4]]
        c.verb = transitive[int(rng.integers(len(transitive)))]
    elif move == 'clause_pp':
      cs = [c for c in clauses if len(c.pps) < 2]
      c = cs[int(rng.integers(len(cs)))]
      preps = lex.CLAUSE_PREPOSITIONS
      prep = preps[int(rng.integers(len(preps)))]
      c.pps.append(_PP(prep, _new_np(rng)))
    else:  # noun_pp
      free = [n for n in nps if n.pp is None]
      np_ = free[int(rng.integers(len(free)))]
      preps = lex.NOUN_PREPOSITIONS
      prep = preps[int(rng.integers(len(preps)))]
      np_.pp = _PP(prep, _new_np(rng))
    current = total()
  return _render(clauses, conjs)


@dataclasses.dataclass
class ToyPairs:
  """Generated sentence pairs of one split.

  Attributes:
    src: source sentences as word lists.
    tgt: target sentences as word lists.
    alignments: per pair, int32 [num_links, 2] (source index, target index).
  """
  src: list[list[str]]
  tgt: list[list[str]]
  alignments: list[np.ndarray]


def generate(num_examples: int, *, seed: int, min_len: int = 3,
             max_len: int = 40,
             exclude: set[tuple[str, ...]] | None = None) -> ToyPairs:
  """Samples `num_examples` distinct pairs with source lengths in a range.

  Source lengths are drawn uniformly from [min_len, max_len]; the sentence is
  then grown to that length (the rare miss is rejected and redrawn).

  Args:
    num_examples: number of pairs.
    seed: random seed; the same seed gives the same pairs, byte for byte.
    min_len: shortest source sentence, in words (at least 3).
    max_len: longest source sentence, in words.
    exclude: source sentences (word tuples) not to produce, e.g. the training
      set when sampling a test split.

  Returns:
    The pairs.
  """
  if min_len < 3:
    raise ValueError(f'min_len must be >= 3 (the shortest clause), '
                     f'got {min_len}.')
  if max_len < min_len:
    raise ValueError(f'max_len ({max_len}) must be >= min_len ({min_len}).')
  rng = _Rng(seed)
  seen = set(exclude or ())
  out = ToyPairs([], [], [])
  attempts = 0
  while len(out.src) < num_examples:
    attempts += 1
    if attempts > 20 * num_examples + 1000:
      raise ValueError(
          f'Could not sample {num_examples} distinct sentences with lengths in '
          f'[{min_len}, {max_len}]; ask for fewer or widen the range.')
    length = int(rng.integers(min_len, max_len + 1))
    src, tgt, links = _sample_sentence(rng, length)
    key = tuple(src)
    if not min_len <= len(src) <= max_len or key in seen:
      continue
    seen.add(key)
    out.src.append(src)
    out.tgt.append(tgt)
    out.alignments.append(np.asarray(links, np.int32).reshape(-1, 2))
  return out


def generate_splits(*, seed: int, num_train: int, num_validation: int,
                    num_test: int, min_len: int = 3, max_train_len: int = 40,
                    max_test_len: int = 60) -> dict[str, ToyPairs]:
  """Train, validation and test splits with disjoint source sentences.

  Train and validation lengths lie in [min_len, max_train_len]; test lengths
  in [min_len, max_test_len], so the test split also holds sentences longer
  than any seen in training.

  Args:
    seed: random seed for all three splits.
    num_train: number of training pairs.
    num_validation: number of validation pairs.
    num_test: number of test pairs.
    min_len: shortest source sentence (words).
    max_train_len: longest training / validation source sentence.
    max_test_len: longest test source sentence.

  Returns:
    {'train': ..., 'validation': ..., 'test': ...}.
  """
  if max_test_len < max_train_len:
    raise ValueError(f'max_test_len ({max_test_len}) must be >= '
                     f'max_train_len ({max_train_len}).')
  seeds = np.random.SeedSequence(seed).spawn(3)
  s_train, s_val, s_test = (int(s.generate_state(1)[0]) for s in seeds)
  train = generate(num_train, seed=s_train, min_len=min_len,
                   max_len=max_train_len)
  seen = {tuple(s) for s in train.src}
  val = generate(num_validation, seed=s_val, min_len=min_len,
                 max_len=max_train_len, exclude=seen)
  seen |= {tuple(s) for s in val.src}
  test = generate(num_test, seed=s_test, min_len=min_len,
                  max_len=max_test_len, exclude=seen)
  return {'train': train, 'validation': val, 'test': test}


def seed_example() -> tuple[list[str], list[str], list[tuple[int, int]]]:
  """The seed pair, "the cat walks on the street", with its alignment."""
  nouns = [n[0] for n in lex.NOUNS]
  clause = _Clause(
      subj=_NP(nouns.index('cat'), False, 'the', []), verb=0,
      pps=[_PP('on', _NP(nouns.index('street'), False, 'the', []))])
  return _render([clause], [])


def has_crossing(alignment: np.ndarray) -> bool:
  """Whether two links cross: i < i' and j > j' for (i, j), (i', j')."""
  a = np.asarray(alignment).reshape(-1, 2)
  if len(a) < 2:
    return False
  s, t = a[:, 0], a[:, 1]
  return bool(np.any((s[:, None] < s[None, :]) & (t[:, None] > t[None, :])))


def alignment_matrix(alignment: np.ndarray, tgt_len: int,
                     src_len: int) -> np.ndarray:
  """Gold alignment as a bool [T, S] matrix (target rows, source columns)."""
  m = np.zeros((tgt_len, src_len), bool)
  a = np.asarray(alignment).reshape(-1, 2)
  m[a[:, 1], a[:, 0]] = True
  return m


def describe(pairs: ToyPairs, bins: Sequence[int] = (10, 20, 30, 40, 50, 60)
             ) -> dict:
  """Crossing share and source-length histogram of a split."""
  lengths = np.array([len(s) for s in pairs.src])
  edges = [0] + list(bins) + [max(bins[-1], int(lengths.max(initial=0))) + 1]
  hist = {}
  for lo, hi in zip(edges[:-1], edges[1:]):
    count = int(((lengths > lo) & (lengths <= hi)).sum())
    if count or hi <= bins[-1]:
      hist[f'{lo + 1}-{hi}'] = count
  return {
      'num_pairs': len(pairs.src),
      'crossing_fraction': float(np.mean(
          [has_crossing(a) for a in pairs.alignments])) if pairs.src else 0.0,
      'min_len': int(lengths.min()) if len(lengths) else 0,
      'max_len': int(lengths.max()) if len(lengths) else 0,
      'length_histogram': hist,
  }
