r"""Measures the data numbers quoted in docs/data.md.

  python benchmarks/data_stats.py [--shared_data=../shared/data]

Toy translation: crossing-alignment share and length histogram per split;
padding fraction with and without length bucketing; the movie world's oracle,
taste-only and popularity ceilings; and, when the real files are present
under --shared_data, the same padding numbers for Tatoeba spa-eng
(CC-BY 2.0 FR, www.manythings.org/anki and tatoeba.org) and MovieLens
ml-latest-small (GroupLens Research).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from attention.data import config as data_config  # pylint: disable=g-import-not-at-top
from attention.data import movie_world
from attention.data import movies
from attention.data import pipeline
from attention.data import toy_translation
from attention.data import translation


def padding(split, batch_size, mask_keys):
  """{setting: (padding fraction, number of batch shapes)} over one epoch."""
  out = {}
  for name, kwargs in (('8 buckets', dict(bucketing=True, num_buckets=8)),
                       ('no bucketing', dict(bucketing=False))):
    batches = list(pipeline.batch_iterator(
        split, batch_size, seed=0, num_epochs=1, process_index=0,
        process_count=1, num_threads=0, **kwargs))
    out[name] = (round(pipeline.padding_fraction(batches, mask_keys), 3),
                 len({b[mask_keys[0]].shape for b in batches}))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shared_data', default='../shared/data')
  args = parser.parse_args()

  toy = data_config.get_config('translate')
  data = translation.load_translation(toy)
  print('toy translation:', data.info, 'vocab', data.src_vocab.size,
        data.tgt_vocab.size)
  splits = toy_translation.generate_splits(
      seed=toy.seed, num_train=toy.num_train,
      num_validation=toy.num_validation, num_test=toy.num_test)
  for name, pairs in splits.items():
    print(f'  {name}:', toy_translation.describe(pairs))
    lengths = np.array([len(t) for t in pairs.tgt])
    print('    target length min/mean/max', lengths.min(),
          lengths.mean().round(1), lengths.max())
  masks = ['src_mask', 'tgt_mask']
  print('  train padding (batch 64):', padding(data.train, 64, masks))
  print('  test padding (batch 64):', padding(data.test, 64, masks))

  world = movies.load_movies(data_config.get_config('movies'))
  targets = world.test.targets
  print('movie world:', world.info)
  print('  oracle', movie_world.oracle_metrics(world.world.oracle_test,
                                               targets))
  print('  lasting taste only', movie_world.oracle_metrics(
      world.world.no_history_test, targets))
  popularity = np.tile(world.popularity.astype(float), (len(targets), 1))
  for user, history in enumerate(world.test.histories):
    popularity[user, history] = 0
  print('  popularity', movie_world.oracle_metrics(popularity, targets))
  print('  train padding (batch 64):', padding(world.train, 64, ['mask']))

  tatoeba = os.path.join(args.shared_data, 'tatoeba-spa-eng', 'spa-eng.zip')
  if os.path.exists(tatoeba):
    start = time.time()
    tat = translation.load_translation({'source': 'tsv', 'path': tatoeba},
                                       '/tmp/data_stats_workdir')
    print(f'tatoeba ({time.time() - start:.1f}s):', tat.info)
    print('  train padding (batch 64):', padding(tat.train, 64, masks))
  movielens = os.path.join(args.shared_data, 'ml-latest-small')
  if os.path.exists(movielens):
    for max_len in (200, 50):
      ml = movies.load_movies({'source': 'movielens', 'path': movielens,
                               'max_len': max_len})
      print(f'ml-latest-small max_len={max_len}:', ml.info)
      print('  train padding (batch 64):', padding(ml.train, 64, ['mask']))


if __name__ == '__main__':
  main()
