r"""SASRec (causal multi-head self-attention) on movie recommendation.

  python train.py --config=configs/mha_movies.py
  python train.py --config=configs/mha_movies.py:smoke   # seconds
  python eval.py  --config=configs/mha_movies.py

Real data (MovieLens ml-latest-small, GroupLens Research; cite Harper &
Konstan 2015, ACM TiiS 5(4)):
  python train.py --config=configs/mha_movies.py:movielens
or --config.data.source=movielens --config.data.path=DIR (also
'interactions' files and 'tfds' names).
"""

from configs import common


def get_config(arg=None):
  variant = common.parse_movies_arg(arg).variant
  config = common.movies_base()
  config.model.name = 'sasrec'
  config.model.num_layers = 2          # self-attention blocks
  config.model.d_model = 64            # item embeddings and model width
  config.model.num_heads = 1           # attention heads
  config.model.mlp_dim = 64            # feed-forward hidden width
  config.model.dropout_rate = 0.2      # embeddings and residual branches
  config.model.attention_dropout_rate = 0.0  # attention weights

  config.loss = 'softmax'              # full softmax over all movies
  config.batch_size = 64
  config.num_train_steps = 3000
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100

  config.sweep = [
      {'loss': 'softmax'},
      {'loss': 'bce'},
      {'model.num_layers': 1},
      {'model.num_heads': 2},
  ]
  if variant == 'movielens':
    common.movielens_movies(config)
    # 9,724 movies x 200 positions: a full softmax per step is slow on a CPU.
    config.loss = 'sampled_softmax'
    config.num_negatives = 128
  if variant == 'smoke':
    common.smoke_movies(config)
    config.model.num_layers = 1
    config.model.d_model = 16
    config.model.mlp_dim = 16
  return config
