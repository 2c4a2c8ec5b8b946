r"""Matrix factorisation (user · movie dot product): the baseline.

  python train.py --config=configs/mf_movies.py[:smoke|:movielens]
  python eval.py  --config=configs/mf_movies.py

Variants and real data: as in configs/mha_movies.py.
"""

from configs import common


def get_config(arg=None):
  config = common.movies_base()
  config.model.name = 'mf'
  config.model.d_model = 64            # user and movie embeddings
  config.model.use_bias = True         # per-movie bias (popularity)

  config.sweep = [
      {'model.d_model': 32},
      {'model.d_model': 64},
      {'optimizer.weight_decay': 0.01},
  ]
  if common.apply_variant(config, arg) == 'smoke':
    config.model.d_model = 16
  return config
