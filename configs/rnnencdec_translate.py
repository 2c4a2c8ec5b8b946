r"""RNNencdec (no attention), the baseline RNNsearch is compared against.

  python train.py --config=configs/rnnencdec_translate.py
  python train.py --config=configs/rnnencdec_translate.py:smoke   # seconds
  python eval.py  --config=configs/rnnencdec_translate.py
"""

from configs import bahdanau_translate


def get_config(arg=None):
  config = bahdanau_translate.get_config(arg)
  config.model.name = 'rnnencdec'
  # No attention: the alignment size and score are not used.
  del config.model['attention_dim']
  del config.model['score']
  config.sweep = []
  return config
