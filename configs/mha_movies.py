r"""SASRec (causal multi-head self-attention) on movie recommendation.

  python train.py --config=configs/mha_movies.py[:smoke|:movielens]
  python eval.py  --config=configs/mha_movies.py
  python train.py --config=configs/mha_movies.py:sasrec_paper \
      --config.data.path=FILE.txt [--config.num_train_steps=N]

Variants (configs/common.py): :smoke trains in seconds; :movielens reads
MovieLens ml-latest-small (GroupLens Research; cite Harper & Konstan 2015,
ACM TiiS 5(4)), or pass --config.data.source=movielens|interactions|tfds
with --config.data.path=DIR (or .name for TFDS).

:sasrec_paper is the protocol of Kang & McAuley, "Self-Attentive Sequential
Recommendation", ICDM 2018 ("the paper"; §III-x are the sections of
arXiv:1808.09781, and §IV Data, §IV Metrics and §IV Impl the parts of its
experiments section on datasets, evaluation metrics and implementation
details) and of the PyTorch port pmixer/SASRec.pytorch ("the reference": python/
main.py 227531f5, python/utils.py 02dc74f4, python/model.py 22c909f9), for
any SASRec-format file ('user item' lines, each user's in time order, as the
authors' ml-1m.txt and Video.txt; scripts/sasrec_format.py writes one from
MovieLens). Each setting, and what it follows:

  data.source='interactions'   the file as is; no rating filter, no k-core
                               (the authors' files are already filtered,
                               §IV Data).
  data.min_interactions=1      every user is kept; those with < 3 items only
                               train, on all their items (the reference's
                               data_partition keeps every user, and
                               evaluate skips those without a test item).
                               Deviation: the reference's current
                               data_partition holds out items only from
                               users with >= 4 (`if nfeedback < 4`); the
                               paper's split (§IV Data: last item test, the
                               one before validation) and the original
                               TensorFlow code use >= 3, as here.
  data.max_len=50              the most recent n = 50 items (§IV Impl: n = 200
                               for MovieLens-1M, 50 for the sparser data;
                               the reference's --maxlen).
  model.positions='recent'     left padding, §III-A: "we repeatedly add a
                               'padding' item to the left"; the newest item
                               always gets the last position (the
                               reference's log2feats: positions 1..L of the
                               left-padded row). We pad on the right and
                               count positions from the newest item, which
                               is the same thing without padding keys.
  model: d_model=50, num_layers=2, num_heads=1, mlp_dim=50
                               §IV Impl: d = 50, b = 2, one head
                               (§III-B); the reference's --hidden_units,
                               --num_blocks, --num_heads; its feed-forward
                               is d -> d.
  model.dropout_rate=0.5, attention_dropout_rate=0.5,
  attention_output_dropout_rate=0
                               §IV Impl: 0.5 (0.2 for
                               MovieLens-1M); the
                               reference's --dropout_rate: on the
                               embeddings (emb_dropout), the attention
                               weights (torch MultiheadAttention's dropout)
                               and twice in the feed-forward branch
                               (PointWiseFeedForward), but not on the
                               attention output (log2feats: seqs +
                               mha_outputs), nor in the original TensorFlow
                               code. The paper's §III-C formula, x +
                               Dropout(g(LayerNorm(x))), drops it too: our
                               default (None) follows the formula.
  model.embed_init='xavier'    the reference's main.py: xavier_normal_ on
                               every parameter that takes it, embeddings
                               included (std sqrt(2 / (rows + d)): 0.014
                               for 9,724 items, against our default
                               N(0, 1/d), 0.14).
  loss='bce', num_negatives=1  §III-E: binary cross-entropy of the true
                               next item against one negative item per
                               position; the reference's BCEWithLogitsLoss
                               on pos and neg logits where pos != 0.
  batch_size=128               §IV Impl; the reference's --batch_size.
  optimizer: Adam, learning_rate=1e-3, b1=0.9, b2=0.98, constant, no warmup,
             no clipping, no weight decay
                               §IV Impl (Adam, 0.001); the reference's
                               torch.optim.Adam(lr, betas=(0.9, 0.98)),
                               --l2_emb 0.
  eval.num_negatives=100 (uniform), eval.negatives_exclude='history'
                               §IV Metrics: the target among 100 uniformly
                               sampled negatives; the reference's evaluate
                               draws them from outside the training items,
                               and outside the validation item too for
                               test (`rated.add(valid[u][0])`).
  eval.max_users=10000         the reference's evaluate scores 10,000 users
                               when a file has more (`if usernum>10000`);
                               all users otherwise.
  data.num_buckets=1           one batch shape: every row padded to max_len,
                               as the reference pads every row (16% padding
                               on ml-latest-small at 50; buckets would save
                               it and compile a function per shape, seconds
                               each, more than they save in short runs).
  steps_per_call=10            divides the evaluation and checkpoint
                               intervals, so one training function compiles.
  num_train_steps=1000, eval_every_steps=100
                               an epoch is ceil(users / 128) steps (the
                               reference's num_batch). 1000 steps = 200
                               epochs of a 610-user file (ml-latest-small);
                               the paper and the original code train 201
                               epochs: set num_train_steps for a larger
                               file (Video.txt: 243 steps per epoch).

Deviations, named (none changes the protocol's metrics' definitions):
  - Blocks are pre-LayerNorm, as the paper's §III-C and the reference's
    --norm_first; the reference's default is post-LayerNorm. Our
    feed-forward uses GELU where both use ReLU.
  - Projections are initialised LeCun normal, biases zero (the reference:
    Xavier normal, torch's default biases). Padding keys: the reference's
    left-padded rows let a short history attend to its padding positions
    (a learnt constant key); ours never attend to padding.
  - Training negatives are drawn uniformly inside the jitted step; one that
    is an item of the user's training window carries no loss (the reference
    redraws until it is outside the user's whole training sequence).
  - Batches visit every training user once per epoch in shuffled order, as
    the reference's sampler (which wraps batches across epochs), grouped in
    length buckets (config.data.bucketing).
  - Evaluation negatives are fixed by eval.negatives_seed, distinct, and
    never the target; the reference redraws them at each evaluation, with
    replacement, and may draw the target itself. The user sample of
    max_users is fixed too (the reference redraws the test users, and
    validates users 1..9999).
  - Ties between the target and a negative are split fairly
    (attention.tasks.ranking); the reference's double argsort breaks them
    by sort order.
"""

import ml_collections

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
  # Position rows: 'absolute' (from the oldest item) | 'recent' (from the
  # newest, as SASRec's left padding).
  config.model.positions = 'absolute'
  # Dropout on the attention output (None: dropout_rate, as the paper).
  config.model.attention_output_dropout_rate = ml_collections.FieldReference(
      None, field_type=float)
  config.model.embed_init = 'normal'   # 'normal' N(0, 1/d) | 'xavier'

  config.sweep = [
      {'loss': 'softmax'},
      {'loss': 'bce'},
      {'model.num_layers': 1},
      {'model.num_heads': 2},
  ]
  variant = common.apply_variant(config, arg, own=('sasrec_paper',))
  if variant == 'sasrec_paper':
    sasrec_paper(config)
  if variant == 'movielens':
    # 9,724 movies x 200 positions: a full softmax per step is slow on a CPU.
    config.loss = 'sampled_softmax'
    config.num_negatives = 128
    # One draw per user, shared by the positions: 1.8x faster steps.
    config.share_negatives = True
  if variant == 'smoke':
    config.model.num_layers = 1
    config.model.d_model = 16
    config.model.mlp_dim = 16
  return config


def sasrec_paper(config):
  """The SASRec protocol; each line is explained in the module docstring."""
  config.data.source = 'interactions'
  config.data.path = None              # --config.data.path=FILE.txt
  config.data.min_interactions = 1
  config.data.max_len = 50
  config.model.positions = 'recent'
  config.model.d_model = 50
  config.model.num_layers = 2
  config.model.num_heads = 1
  config.model.mlp_dim = 50
  config.model.dropout_rate = 0.5
  config.model.attention_dropout_rate = 0.5
  config.model.attention_output_dropout_rate = 0.0
  config.model.embed_init = 'xavier'
  config.loss = 'bce'
  config.num_negatives = 1
  config.batch_size = 128
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = 'constant'
  config.optimizer.warmup_steps = 0
  config.optimizer.grad_clip = 0.0
  config.optimizer.weight_decay = 0.0
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.98
  config.eval.num_negatives = 100
  config.eval.negatives_exclude = 'history'
  config.eval.max_users = 10000
  config.data.num_buckets = 1
  config.steps_per_call = 10
  config.num_train_steps = 1000
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 500
  config.log_every_steps = 50
