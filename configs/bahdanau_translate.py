r"""RNNsearch (Bahdanau additive attention) on toy translation.

  python train.py --config=configs/bahdanau_translate.py[:smoke|:tatoeba]
  python eval.py  --config=configs/bahdanau_translate.py

Variants and real data: as in configs/mha_translate.py.
"""

from configs import common


def get_config(arg=None):
  config = common.translate_base()
  config.model.name = 'rnnsearch'
  config.model.embed_dim = 64          # word embeddings
  config.model.hidden_dim = 128        # GRU size (per encoder direction)
  config.model.attention_dim = 128     # alignment size A of v.tanh(Ws+Uh)
  config.model.score = 'additive'      # 'additive' | 'multiplicative'
  # attention query: 'conditional' (conditional GRU, as in Nematus: a state
  # that has read the previous target word; aligns better on the toy task,
  # AER 0.086 against 0.129) | 'previous_state' (the paper's s_{i-1})
  config.model.query = 'conditional'
  config.model.deep_output = True      # maxout readout as in the paper
  config.model.readout_dim = 128       # maxout units
  config.model.dropout_rate = 0.0      # embeddings and readout
  config.optimizer.learning_rate = 3e-3

  config.sweep = [
      {'model.query': 'conditional'},
      {'model.query': 'previous_state'},
      {'model.score': 'multiplicative'},
  ]
  variant = common.apply_variant(config, arg)
  if variant == 'tatoeba':
    config.model.query = 'previous_state'  # the run in docs/results.md
  if variant == 'smoke':
    config.model.embed_dim = 8
    config.model.hidden_dim = 16
    config.model.attention_dim = 8
    config.model.readout_dim = 8
  return config
