r"""Transformer (multi-head attention) on toy translation.

  python train.py --config=configs/mha_translate.py[:smoke|:tatoeba]
  python eval.py  --config=configs/mha_translate.py

Variants (configs/common.py): :smoke trains in seconds; :tatoeba translates
the Tatoeba English->Spanish pairs (CC-BY 2.0 FR, manythings.org/anki), or
any parallel TSV with --config.data.source=tsv --config.data.path=FILE.
"""

from ml_collections import config_dict

from configs import common


def get_config(arg=None):
  config = common.translate_base()
  config.model.name = 'transformer'
  config.model.num_layers = 2          # encoder and decoder layers
  config.model.d_model = 128           # model width
  config.model.num_heads = 4           # attention heads
  # Key/value heads (GQA); None = num_heads. A placeholder, so that
  # --config.model.num_kv_heads=1 can set it from the command line.
  config.model.num_kv_heads = config_dict.placeholder(int)
  config.model.mlp_dim = 256           # feed-forward hidden width
  config.model.dropout_rate = 0.0      # embeddings and residual branches
  config.model.attention_dropout_rate = 0.0  # attention weights
  config.model.tie_embeddings = True   # output layer = target embeddings
  config.model.position = 'rope'       # 'rope' | 'sinusoidal' | 'learned'
  config.model.normalize_qk = True     # QK-LayerNorm
  config.optimizer.learning_rate = 5e-3

  config.sweep = [
      {'model.num_layers': 2},
      {'model.num_layers': 3},
      {'model.num_layers': 3, 'model.num_kv_heads': 1},
  ]
  if common.apply_variant(config, arg) == 'smoke':
    config.model.num_layers = 1
    config.model.d_model = 16
    config.model.num_heads = 2
    config.model.mlp_dim = 32
  return config
