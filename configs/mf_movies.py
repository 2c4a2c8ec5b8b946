r"""Matrix factorisation (user · movie dot product): the baseline.

  python train.py --config=configs/mf_movies.py
  python train.py --config=configs/mf_movies.py:smoke   # seconds
  python eval.py  --config=configs/mf_movies.py

Real data (MovieLens ml-latest-small, GroupLens Research; cite Harper &
Konstan 2015, ACM TiiS 5(4)):
  python train.py --config=configs/mf_movies.py:movielens
or --config.data.source=movielens --config.data.path=DIR.
"""

from configs import common


def get_config(arg=None):
  variant = common.parse_movies_arg(arg).variant
  config = common.movies_base()
  config.model.name = 'mf'
  config.model.d_model = 64            # user and movie embeddings
  config.model.use_bias = True         # per-movie bias (popularity)

  config.loss = 'softmax'              # full softmax over all movies
  config.batch_size = 64
  config.num_train_steps = 3000
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.weight_decay = 0.0  # AdamW decoupled weight decay

  config.sweep = [
      {'model.d_model': 32},
      {'model.d_model': 64},
      {'optimizer.weight_decay': 0.01},
  ]
  if variant == 'movielens':
    common.movielens_movies(config)
  if variant == 'smoke':
    common.smoke_movies(config)
    config.model.d_model = 16
  return config
