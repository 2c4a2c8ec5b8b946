r"""RNNsearch (Bahdanau additive attention) on toy translation.

  python train.py --config=configs/bahdanau_translate.py
  python train.py --config=configs/bahdanau_translate.py:smoke   # seconds
  python eval.py  --config=configs/bahdanau_translate.py

Real data (Tatoeba English->Spanish, CC-BY 2.0 FR, manythings.org/anki):
  python train.py --config=configs/bahdanau_translate.py:tatoeba
or any parallel TSV: --config.data.source=tsv --config.data.path=FILE
"""

from configs import common


def get_config(arg=None):
  variant = common.parse_arg(arg).variant
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

  config.batch_size = 64
  config.num_train_steps = 3000
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.label_smoothing = 0.0
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 100

  config.sweep = [
      {'model.query': 'conditional'},
      {'model.query': 'previous_state'},
      {'model.score': 'multiplicative'},
  ]
  if variant == 'tatoeba':
    common.tatoeba_translate(config)
    config.model.query = 'previous_state'  # the README's Tatoeba run
  if variant == 'smoke':
    common.smoke_translate(config)
    config.model.embed_dim = 8
    config.model.hidden_dim = 16
    config.model.attention_dim = 8
    config.model.readout_dim = 8
  return config
