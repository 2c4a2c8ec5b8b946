r"""SASRec (causal multi-head self-attention) on movie recommendation.

  python train.py --config=configs/mha_movies.py[:smoke|:movielens]
  python eval.py  --config=configs/mha_movies.py

Variants (configs/common.py): :smoke trains in seconds; :movielens reads
MovieLens ml-latest-small (GroupLens Research; cite Harper & Konstan 2015,
ACM TiiS 5(4)), or pass --config.data.source=movielens|interactions|tfds
with --config.data.path=DIR (or .name for TFDS).
"""

from configs import common


def get_config(arg=None):
  config = common.movies_base()
  config.model.name = 'sasrec'
  config.model.num_layers = 2          # self-attention blocks
  config.model.d_model = 64            # item embeddings and model width
  config.model.num_heads = 1           # attention heads
  config.model.mlp_dim = 64            # feed-forward hidden width
  config.model.dropout_rate = 0.2      # embeddings and residual branches
  config.model.attention_dropout_rate = 0.0  # attention weights

  config.sweep = [
      {'loss': 'softmax'},
      {'loss': 'bce'},
      {'model.num_layers': 1},
      {'model.num_heads': 2},
  ]
  variant = common.apply_variant(config, arg)
  if variant == 'movielens':
    # 9,724 movies x 200 positions: a full softmax per step is slow on a CPU.
    config.loss = 'sampled_softmax'
    config.num_negatives = 128
  if variant == 'smoke':
    config.model.num_layers = 1
    config.model.d_model = 16
    config.model.mlp_dim = 16
  return config
