"""What every experiment config shares: the defaults and the variants.

Every default of an experiment is written here once: the loop's keys in
:func:`base`, each task's keys in :func:`translate_base` and
:func:`movies_base` (config.data's in attention/data/config.py). A config
file's ``get_config(arg)`` starts from its task's base (or from another
config: rnnencdec_translate from bahdanau_translate), sets its model and only
the keys it changes, and calls :func:`apply_variant`, which reads ``arg``
(the text after ':' in ``--config=configs/<experiment>.py:<arg>``) and
applies that variant's settings (the file then sets what its own model
changes in that variant). The variants:

  smoke      trains in seconds on tiny data (the tests use it)
  tatoeba    translate configs: Tatoeba English -> Spanish in ../shared/data
  movielens  movie configs: MovieLens ml-latest-small in ../shared/data

and one config file's own: mha_movies.py:sasrec_paper (SASRec's protocol).
"""

from __future__ import annotations

import ml_collections

from attention.data import config as data_config



def parse_arg(arg: str | None, task: str, own: tuple[str, ...] = ()) -> str:
  """The variant of ``task`` that ``arg`` names, or 'default' for none.

  ``own``: the variants the calling config file defines itself.
  """
  arg = (arg or '').strip()
  valid = [name for t, name in VARIANTS if t == task] + list(own)
  if arg and arg not in valid:
    raise ValueError(f'Unknown config variant {arg!r}; valid variants: '
                     f'{valid} (or none).')
  return arg or 'default'


def apply_variant(config: ml_collections.ConfigDict, arg: str | None,
                  own: tuple[str, ...] = ()) -> str:
  """Applies the variant ``arg`` names to ``config``; returns its name.

  A config file then sets what its own model changes in that variant, and
  applies the variants in ``own`` (its own) entirely.
  """
  variant = parse_arg(arg, config.task, own)
  if (config.task, variant) in VARIANTS:
    VARIANTS[config.task, variant](config)
  return variant


def base(task: str) -> ml_collections.ConfigDict:
  """The keys of every experiment, at their defaults."""
  config = ml_collections.ConfigDict()
  config.task = task                  # 'translate' | 'movies'
  config.model = ml_collections.ConfigDict()  # name + the Model's fields
  config.data = data_config.get_config(task)  # see attention/data/config.py
  # Compute dtype: 'float32' | 'bfloat16' (activations and matmuls; the
  # parameters, optimizer state, softmax, loss and metrics stay float32).
  config.dtype = 'float32'
  config.seed = 0                     # parameter init, dropout, batch order
  config.batch_size = 64              # global batch, over all devices
  config.num_train_steps = 3000       # training steps
  config.eval_every_steps = 1000      # validation + alignment plots
  config.checkpoint_every_steps = 1000  # Orbax checkpoint (and at the end)
  config.log_every_steps = 50         # console / metrics.jsonl / TensorBoard
  # Training steps per compiled call (a lax.scan over that many batches):
  # the same batches and parameters as 1, less host overhead per step.
  config.steps_per_call = 8

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 1e-3  # peak learning rate
  config.optimizer.warmup_steps = 100    # linear warmup from 0 (0 = none)
  config.optimizer.schedule = 'cosine'   # 'cosine' | 'rsqrt' | 'constant'
  config.optimizer.final_lr_fraction = 0.1  # cosine: end at this x peak
  config.optimizer.weight_decay = 0.0    # AdamW decoupled weight decay
  config.optimizer.grad_clip = 1.0       # clip by global norm; 0 = off
  config.optimizer.b1 = 0.9              # Adam beta1
  config.optimizer.b2 = 0.98             # Adam beta2

  # A sweep: a list of {dotted key: value} overrides; `train.py
  # --sweep_index=i` runs point i into <workdir>/<i>-<overrides>.
  config.sweep = []
  return config


def translate_base() -> ml_collections.ConfigDict:
  """Translation keys on top of :func:`base`."""
  config = base('translate')
  config.label_smoothing = 0.0        # label smoothing of the training loss
  config.eval = ml_collections.ConfigDict()
  config.eval.beam_size = 4           # eval.py beam search width
  config.eval.length_penalty = 0.6    # GNMT length-penalty exponent alpha
  config.eval.max_decode_length = 0   # output tokens; 0 = 2 x source + 10
  config.eval.num_alignment_examples = 4  # sentences plotted at each eval
  config.eval.bleu_length_edges = (0, 10, 20, 30, 40, 50)  # BLEU buckets
  return config


def _smoke_loop(config: ml_collections.ConfigDict) -> None:
  """The :smoke loop settings every task shares: 4 steps, one batch shape."""
  config.data.num_threads = 0
  config.data.num_buckets = 1         # one batch shape: one compilation
  config.batch_size = 16
  config.num_train_steps = 4
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 2
  config.log_every_steps = 2
  config.optimizer.warmup_steps = 2


def smoke_translate(config: ml_collections.ConfigDict) -> None:
  """Shrinks a translate config so it trains in seconds (tests use it)."""
  config.data.num_train = 256
  config.data.num_validation = 32
  config.data.num_test = 32
  config.data.max_train_len = 10
  config.data.max_test_len = 12
  _smoke_loop(config)
  config.eval.beam_size = 2
  config.eval.num_alignment_examples = 1
  config.eval.bleu_length_edges = (0, 5, 10)


def tatoeba_translate(config: ml_collections.ConfigDict) -> None:
  """English -> Spanish on Tatoeba (manythings.org spa-eng.zip, CC-BY 2.0 FR).

  Attribution: www.manythings.org/anki and tatoeba.org. The path is relative
  to the repository root; point --config.data.path elsewhere if needed.
  """
  config.data.source = 'tsv'
  config.data.path = '../shared/data/tatoeba-spa-eng/spa-eng.zip'
  config.data.src_column = 0          # column 0 is English
  config.data.vocab_size = 4000       # SentencePiece pieces per language
  config.data.max_len = 32            # drop longer training pairs (tokens)
  config.num_train_steps = 5000       # about 3 epochs at batch 64
  config.eval.bleu_length_edges = (0, 5, 10, 15, 20, 30)


def movies_base() -> ml_collections.ConfigDict:
  """Movie-recommendation keys on top of :func:`base` (synthetic world)."""
  config = base('movies')
  config.loss = 'softmax'             # 'softmax' | 'bce' | 'sampled_softmax'
  config.num_negatives = 1            # bce / sampled_softmax: per position
  # bce / sampled_softmax: one draw per user row, shared by its positions
  # (sasrec, mf): no [B, L, N, D] gather; False draws per position.
  config.share_negatives = False
  # softmax: movies already watched at a position are not candidates there
  # (as in full-ranking evaluation); False = the plain softmax over all.
  config.loss_excludes_seen = True
  config.eval = ml_collections.ConfigDict()
  config.eval.ks = (1, 5, 10)         # HR@K and NDCG@K cut-offs
  config.eval.num_negatives = 100     # sampled protocols: negatives per user
  config.eval.negatives_seed = 0      # sampled protocols: fixed negatives
  # Sampled negatives are never the target nor a movie of the user's whole
  # 'sequence' | of the 'history' before the target (SASRec's code).
  config.eval.negatives_exclude = 'sequence'
  config.eval.max_users = 0           # > 0: evaluate a fixed user sample
  config.eval.num_attention_examples = 4  # users plotted at each eval
  config.eval.num_attention_candidates = 8  # target attention: rows plotted
  config.eval.max_plot_len = 30       # plots show the most recent movies
  return config


def smoke_movies(config: ml_collections.ConfigDict) -> None:
  """Shrinks a movies config so it trains in seconds (tests use it)."""
  config.data.source = 'toy'
  config.data.num_users = 48
  config.data.num_items = 128         # > 100 sampled negatives + a history
  config.data.min_seq_len = 5
  config.data.max_seq_len = 12
  config.data.max_len = 10            # validation and test: one shape
  _smoke_loop(config)
  config.eval.num_attention_examples = 1
  config.eval.num_attention_candidates = 3


def movielens_movies(config: ml_collections.ConfigDict) -> None:
  """MovieLens ml-latest-small (GroupLens Research; research use only).

  Cite F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets:
  History and Context. ACM TiiS 5(4). The path is relative to the repository
  root; point --config.data.path elsewhere if needed.
  """
  config.data.source = 'movielens'
  config.data.path = '../shared/data/ml-latest-small'
  config.data.min_interactions = 5    # users with fewer are dropped
  # 610 users whose histories average 165 movies: a window of 200 trains on
  # most of each history (a model with a cheaper step may lower it).
  config.data.max_len = 200
  config.num_train_steps = 2000       # about 200 passes over the 610 users
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 500


# (task, variant name) -> the function that applies it to a base config.
VARIANTS = {('translate', 'smoke'): smoke_translate,
            ('translate', 'tatoeba'): tatoeba_translate,
            ('movies', 'smoke'): smoke_movies,
            ('movies', 'movielens'): movielens_movies}
