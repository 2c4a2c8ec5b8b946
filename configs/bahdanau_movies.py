r"""Target attention (DIN-style, Bahdanau's additive score) on movies.

  python train.py --config=configs/bahdanau_movies.py
  python train.py --config=configs/bahdanau_movies.py:smoke   # seconds
  python eval.py  --config=configs/bahdanau_movies.py

Real data (MovieLens ml-latest-small, GroupLens Research; cite Harper &
Konstan 2015, ACM TiiS 5(4)):
  python train.py --config=configs/bahdanau_movies.py:movielens
or --config.data.source=movielens --config.data.path=DIR.
"""

from configs import common


def get_config(arg=None):
  variant = common.parse_movies_arg(arg).variant
  config = common.movies_base()
  config.model.name = 'target_attention'
  config.model.embed_dim = 64          # item and recency embeddings
  config.model.attention_dim = 32      # alignment size A of v.tanh(Wq+Uk)
  config.model.scorer = 'dot'          # 'dot' | 'mlp' (DIN's MLP)
  config.model.mlp_dim = 64            # hidden width of the 'mlp' scorer
  config.model.recency = True          # recency embeddings on the keys
  config.model.dropout_rate = 0.2      # on item embeddings
  config.model.chunk_size = 512        # movies scored at once (ranking)

  config.loss = 'sampled_softmax'      # a full softmax is too costly here
  config.num_negatives = 16            # sampled movies per position
  config.batch_size = 64
  config.num_train_steps = 3000
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100

  config.sweep = [
      {'loss': 'sampled_softmax'},
      {'loss': 'bce', 'num_negatives': 1},
      {'model.scorer': 'mlp'},
      {'model.recency': False},
  ]
  if variant == 'movielens':
    common.movielens_movies(config)
    # Every candidate attends over the history at every position: memory
    # grows as positions x candidates x history, so a shorter window.
    config.data.max_len = 50
  if variant == 'smoke':
    common.smoke_movies(config)
    config.model.embed_dim = 16
    config.model.attention_dim = 8
    config.model.mlp_dim = 8
    config.num_negatives = 2
  return config
