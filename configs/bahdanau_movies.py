r"""Target attention (DIN-style, Bahdanau's additive score) on movies.

  python train.py --config=configs/bahdanau_movies.py[:smoke|:movielens]
  python eval.py  --config=configs/bahdanau_movies.py

Variants and real data: as in configs/mha_movies.py.
"""

from configs import common


def get_config(arg=None):
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

  config.sweep = [
      {'loss': 'sampled_softmax'},
      {'loss': 'bce', 'num_negatives': 1},
      {'model.scorer': 'mlp'},
      {'model.recency': False},
  ]
  variant = common.apply_variant(config, arg)
  if variant == 'movielens':
    # Every candidate attends over the history at every position: memory
    # grows as positions x candidates x history, so a shorter window.
    config.data.max_len = 50
  if variant == 'smoke':
    config.model.embed_dim = 16
    config.model.attention_dim = 8
    config.model.mlp_dim = 8
    config.num_negatives = 2
  return config
