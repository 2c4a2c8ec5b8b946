"""A synthetic movie world: latent genres, series, drifting tastes, an oracle.

Movies have non-negative latent feature vectors over ten named genres
(`GENRES`), with magnitudes (a movie can be very much 'horror' and a little
'comedy'), a quality bias, and a generated title with a year, e.g.
"The Midnight Curse (1987)". About a third of the movies belong to series of
2 to 5 installments that share their features ("Star Orbit (1994)", "Star
Orbit 2 (1997)", ...).

Users have taste vectors over the same genres (a few loved genres, some
disliked ones). Each user watches a sequence of distinct movies. At each step
the next movie is drawn from a softmax over the unwatched movies of

    logit(m) = (taste + recent_t) . features(m) + quality(m) + series(m)

where
* taste is the user's lasting taste, and recent_t a taste drift towards what
  was just watched: recent_0 = 0,
  recent_{t+1} = (1 - drift) recent_t + drift * scale * features(watched);
* series(m) is +`sequel_bonus` when the previous installment of m has been
  watched (users go on with a series they started) and -`sequel_bonus` when it
  has not (nobody starts with part 3).

So the next movie depends on the dot product of taste and movie features AND on
the history (which installments were seen, which genres were watched lately):
a model that attends to the history can beat one that only knows the user.

Because the world is known, the generator also returns the exact distribution
of each user's held-out movies (`oracle_validation`, `oracle_test`): ranking by
it gives the best achievable HR@K / NDCG@K (`oracle_metrics`). For comparison,
`no_history_test` is the distribution a model would predict from the user's
initial taste alone (no drift, no series; watched movies still excluded).

All draws come from one `numpy.random.Generator(PCG64(seed))`: the same seed
gives the same world, byte for byte, for a given NumPy version.
"""

from __future__ import annotations

import dataclasses

import numpy as np

GENRES = ('romance', 'action', 'comedy', 'drama', 'horror', 'sci-fi',
          'thriller', 'animation', 'documentary', 'fantasy')

# Title words per genre: (adjectives, nouns).
_WORDS = {
    'romance': (('Sweet', 'Secret', 'Endless', 'Summer', 'Tender'),
                ('Love', 'Hearts', 'Kiss', 'Wedding', 'Letters', 'Paris')),
    'action': (('Deadly', 'Final', 'Iron', 'Rapid', 'Rogue'),
               ('Strike', 'Bullet', 'Mission', 'Fury', 'Storm', 'Target')),
    'comedy': (('Crazy', 'Wild', 'Silly', 'Lucky', 'Awkward'),
               ('Party', 'Trouble', 'Holiday', 'Roommates', 'Neighbours',
                'Road Trip')),
    'drama': (('Quiet', 'Broken', 'Distant', 'Silent', 'Last'),
              ('River', 'Promise', 'Memory', 'Winter', 'Harvest', 'Sons')),
    'horror': (('Midnight', 'Bloody', 'Haunted', 'Hollow', 'Cursed'),
               ('Curse', 'Scream', 'Cellar', 'Ritual', 'Night', 'Doll')),
    'sci-fi': (('Quantum', 'Stellar', 'Android', 'Lunar', 'Infinite'),
               ('Orbit', 'Galaxy', 'Signal', 'Colony', 'Machine', 'Star')),
    'thriller': (('Hidden', 'Silent', 'Double', 'Dark', 'Cold'),
                 ('Witness', 'Alibi', 'Pursuit', 'Cipher', 'Shadow', 'Game')),
    'animation': (('Little', 'Magic', 'Brave', 'Tiny', 'Happy'),
                  ('Dragon', 'Toys', 'Bunny', 'Kingdom', 'Penguins', 'Robot')),
    'documentary': (('Wild', 'Deep', 'Frozen', 'Ancient', 'Hidden'),
                    ('Planet', 'Ocean', 'Earth', 'Journey', 'Life', 'Cities')),
    'fantasy': (('Enchanted', 'Lost', 'Golden', 'Dark', 'Eternal'),
                ('Sword', 'Wizard', 'Realm', 'Quest', 'Crown', 'Forest')),
}
_SEQUEL_SUFFIXES = ('', ' 2', ' 3', ' 4', ' 5')


@dataclasses.dataclass
class World:
  """A generated world. Item ids are 1..M (row 0 is padding), users 1..U.

  Attributes:
    features: float32 [M+1, K] latent genre features (K = len(GENRES)).
    quality: float32 [M+1] per-movie bias.
    titles: M+1 titles; titles[0] = '<pad>'.
    predecessor: int32 [M+1] previous installment of the series, 0 if none.
    tastes: float32 [U+1, K] initial user tastes (row 0 unused).
    sequences: per user (index u - 1), int32 [n_u] watched movies in order.
    oracle_validation: float32 [U, M+1] true distribution of each user's
      second-to-last movie given the movies before it.
    oracle_test: float32 [U, M+1] true distribution of each user's last movie
      given all the movies before it.
    no_history_test: float32 [U, M+1] the same step predicted from the
      initial taste alone (no drift, no series effects).
  """
  features: np.ndarray
  quality: np.ndarray
  titles: list[str]
  predecessor: np.ndarray
  tastes: np.ndarray
  sequences: list[np.ndarray]
  oracle_validation: np.ndarray
  oracle_test: np.ndarray
  no_history_test: np.ndarray

  @property
  def num_items(self) -> int:
    return len(self.titles) - 1


def _titles(rng: np.random.Generator, primary: np.ndarray,
            secondary: np.ndarray, series_start: list[int],
            series_len: list[int], num_items: int) -> list[str]:
  """Unique titles; installments of a series share a base title."""
  titles = [''] * num_items
  used = set()
  years = rng.integers(1960, 2016, size=num_items)
  i = 0
  while i < num_items:
    n = series_len[i] if i in series_start else 1
    g1, g2 = GENRES[primary[i]], GENRES[secondary[i]]
    for _ in range(1000):
      adj = _WORDS[g1][0][rng.integers(len(_WORDS[g1][0]))]
      noun = _WORDS[g2][1][rng.integers(len(_WORDS[g2][1]))]
      noun2 = _WORDS[g1][1][rng.integers(len(_WORDS[g1][1]))]
      pattern = rng.integers(4)
      base = (f'The {adj} {noun}', f'{adj} {noun}', f'{noun2} of the {noun}',
              f'{noun}')[pattern]
      if base not in used:
        break
      # Disambiguate a taken base the way studios do.
      again = ('Returns', 'Rising', 'Forever', 'Reborn')[rng.integers(4)]
      base = f'{base} {again}'
      if base not in used:
        break
    used.add(base)
    year = int(years[i])
    for k in range(n):
      titles[i + k] = f'{base}{_SEQUEL_SUFFIXES[k]} ({year})'
      year += int(rng.integers(1, 5))
    i += n
  return titles


def generate(*, num_users: int = 1000, num_items: int = 500,
             min_seq_len: int = 10, max_seq_len: int = 50, seed: int = 0,
             drift: float = 0.3, sequel_bonus: float = 3.0,
             series_fraction: float = 0.35) -> World:
  """Generates movies, users and their watch sequences.

  Args:
    num_users: number of users U.
    num_items: number of movies M.
    min_seq_len: shortest watch sequence (at least 3: train, validation and
      test items).
    max_seq_len: longest watch sequence (at most M).
    seed: random seed.
    drift: weight of the last movie in the recent-taste average (0: no
      drift).
    sequel_bonus: logit bonus for the next installment of a started series
      (and malus for an installment whose predecessor was not seen).
    series_fraction: share of movies that belong to a series.

  Returns:
    The world.
  """
  if min_seq_len < 3:
    raise ValueError(f'config.data.min_seq_len must be >= 3, got '
                     f'{min_seq_len}.')
  if not min_seq_len <= max_seq_len <= num_items:
    raise ValueError(
        'Expected min_seq_len <= max_seq_len <= num_items; got '
        f'{min_seq_len}, {max_seq_len}, {num_items}.')
  if num_users < 1:
    raise ValueError(f'config.data.num_users must be >= 1, got {num_users}.')
  rng = np.random.default_rng(seed)
  k, m = len(GENRES), num_items

  # Movies: 1-3 genres with magnitudes, grouped into series.
  features = np.zeros((m, k), np.float64)
  primary = rng.integers(k, size=m)
  secondary = rng.integers(k, size=m)
  series_start, series_len = [], []
  predecessor = np.zeros(m, np.int64)  # 0-based ids + 1; 0 = none.
  i = 0
  while i < m:
    if rng.random() < series_fraction / 3 and m - i >= 2:
      n = int(min(rng.integers(2, 6), m - i))
    else:
      n = 1
    f = np.zeros(k)
    f[primary[i]] = rng.gamma(4.0, 0.3)
    if rng.random() < 0.7:
      f[secondary[i]] += rng.gamma(2.0, 0.25)
    if rng.random() < 0.3:
      f[rng.integers(k)] += rng.gamma(1.5, 0.2)
    for j in range(n):
      features[i + j] = f * rng.uniform(0.85, 1.15, size=k)
      primary[i + j], secondary[i + j] = primary[i], secondary[i]
      if j:
        predecessor[i + j] = i + j  # 1-based id of movie i + j - 1.
    if n > 1:
      series_start.append(i)
      series_len.append(n)
    i += n
  series_len = dict(zip(series_start, series_len))
  quality = rng.normal(0.0, 0.6, size=m)
  titles = _titles(rng, primary, secondary, series_start,
                   [series_len.get(j, 1) for j in range(m)], m)

  # Users: a few loved genres, some disliked ones.
  tastes = rng.dirichlet(np.full(k, 0.4), size=num_users) * 4.0
  tastes -= (rng.random((num_users, k)) < 0.2) * rng.uniform(
      0.5, 1.5, size=(num_users, k))
  lengths = rng.integers(min_seq_len, max_seq_len + 1, size=num_users)

  # Watch sequences, all users in lockstep.
  successor = np.full(m, -1)
  has_pred = predecessor > 0
  successor[predecessor[has_pred] - 1] = np.flatnonzero(has_pred)
  series = np.where(has_pred, -sequel_bonus, 0.0)[None, :].repeat(
      num_users, axis=0)
  recent = np.zeros_like(tastes)
  scale = np.linalg.norm(tastes, axis=1, keepdims=True).mean() / np.linalg.norm(
      features, axis=1).mean()
  watched = np.zeros((num_users, m), bool)
  seqs = np.zeros((num_users, max_seq_len), np.int64)
  oracle_val = np.zeros((num_users, m + 1), np.float32)
  oracle_test = np.zeros((num_users, m + 1), np.float32)
  no_history = np.zeros((num_users, m + 1), np.float32)
  users = np.arange(num_users)

  def softmax(logits):
    logits = np.where(watched, -np.inf, logits)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)

  for step in range(max_seq_len):
    p = softmax((tastes + recent) @ features.T + quality[None, :] + series)
    last = lengths - 1 == step
    oracle_test[last, 1:] = p[last]
    oracle_val[lengths - 2 == step, 1:] = p[lengths - 2 == step]
    if last.any():
      no_history[last, 1:] = softmax(tastes @ features.T + quality[None, :])[
          last]
    active = step < lengths
    cdf = np.cumsum(p, axis=1)
    u = rng.random(num_users) * cdf[:, -1]
    choice = np.minimum((cdf < u[:, None]).sum(axis=1), m - 1)
    # Never re-pick a watched movie because of rounding at the CDF edges.
    bad = watched[users, choice]
    if bad.any():
      choice[bad] = np.argmax(np.where(watched[bad], -1.0, p[bad]), axis=1)
    choice = np.where(active, choice, 0)
    a = users[active]
    seqs[a, step] = choice[a] + 1
    watched[a, choice[a]] = True
    nxt = successor[choice[a]]
    has = nxt >= 0
    series[a[has], nxt[has]] = sequel_bonus
    recent[a] = (1 - drift) * recent[a] + drift * scale * features[choice[a]]

  pad = lambda x: np.concatenate([np.zeros((1,) + x.shape[1:], x.dtype), x])
  return World(
      features=pad(features).astype(np.float32),
      quality=pad(quality).astype(np.float32),
      titles=['<pad>'] + titles,
      predecessor=pad(predecessor).astype(np.int32),
      tastes=pad(tastes).astype(np.float32),
      sequences=[seqs[u, :lengths[u]].astype(np.int32)
                 for u in range(num_users)],
      oracle_validation=oracle_val, oracle_test=oracle_test,
      no_history_test=no_history)


def oracle_metrics(probs: np.ndarray, targets: np.ndarray | None = None,
                   k: int = 10) -> dict[str, float]:
  """HR@k and NDCG@k of ranking items by `probs` (the true distribution).

  Args:
    probs: float [N, M+1] next-item distributions (column 0 = padding).
    targets: int [N] the items that actually came next (optional).
    k: cut-off.

  Returns:
    'expected_hr@k' / 'expected_ndcg@k': expectations over the target drawn
    from `probs` (the ceiling, without sampling noise); with `targets`, also
    'hr@k' / 'ndcg@k' on the realised targets.
  """
  probs = np.asarray(probs, np.float64)
  top = np.argsort(-probs, axis=1, kind='stable')[:, :k]
  discount = 1.0 / np.log2(np.arange(2, k + 2))
  p_top = np.take_along_axis(probs, top, axis=1)
  out = {f'expected_hr@{k}': float(p_top.sum(axis=1).mean()),
         f'expected_ndcg@{k}': float((p_top * discount).sum(axis=1).mean())}
  if targets is not None:
    hit = top == np.asarray(targets)[:, None]
    out[f'hr@{k}'] = float(hit.any(axis=1).mean())
    out[f'ndcg@{k}'] = float((hit * discount).sum(axis=1).mean())
  return out
