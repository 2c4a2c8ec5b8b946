"""The whole config is checked in one pass before any data is read: every
bad value is a one-line error naming the key, the value and what is allowed,
and a run that never started leaves nothing behind."""

import importlib

import pytest

from attention.training import config_check
from attention.training import train_lib


def _parent(config, path):
  """(the ConfigDict holding config.<path>, the last part of path)."""
  *parents, last = path.split('.')
  for part in parents:
    config = config[part]
  return config, last


def _set(path, value):
  """An edit that sets config.<path> (dotted), adding the key if needed."""
  def edit(config):
    node, last = _parent(config, path)
    with node.unlocked():
      node[last] = value
  return edit


def _delete(path):
  def edit(config):
    node, last = _parent(config, path)
    with node.unlocked():
      del node[last]
  return edit


# (config, edit, the message it must give).
CASES = [
    # Names, with a did-you-mean where one is close.
    ('mha_translate', _set('task', 'summarise'),
     "config.task='summarise' is not one of ['translate', 'movies']."),
    ('mha_translate', _set('model.name', 'transfomer'),
     "did you mean 'transformer'?"),
    ('mha_translate', _set('model.name', 'lstm'),
     "config.model.name='lstm' is not one of ['mf', 'rnnencdec'"),
    ('mha_translate', _set('model.num_layer', 2),
     "config.model.num_layer is not a field of model 'transformer' (valid "
     "keys: ["),
    ('mha_translate', _set('model.num_layer', 2), "did you mean 'num_layers'?"),
    ('mha_translate', _set('model.position', 'rotary'),
     "config.model.position='rotary' is not one of ['sinusoidal', 'learned', "
     "'rope']."),
    ('bahdanau_translate', _set('model.score', 'dot'),
     "config.model.score='dot' is not one of ['additive', 'multiplicative']."),
    ('bahdanau_translate', _set('model.query', 'previous'),
     "did you mean 'previous_state'?"),
    ('rnnencdec_translate', _set('model.query', 'next'),
     "config.model.query='next' is not one of ['previous_state', "
     "'conditional']."),
    ('bahdanau_movies', _set('model.scorer', 'cosine'),
     "config.model.scorer='cosine' is not one of ['dot', 'mlp']."),
    ('mha_movies', _set('loss', 'bpr'),
     "config.loss='bpr' is not one of ['softmax', 'bce', 'sampled_softmax']."),
    ('mha_translate', _set('optimizer.schedule', 'linear'),
     "config.optimizer.schedule='linear' is not one of ['cosine', 'rsqrt', "
     "'constant']."),
    ('mha_translate', _set('data.source', 'csv'),
     "Unknown config.data.source 'csv' for task 'translate'; valid sources: "
     "['toy', 'tsv', 'tfds']."),
    ('mha_movies', _set('data.source', 'tsv'),
     "Unknown config.data.source 'tsv' for task 'movies'"),
    ('mha_translate', _set('data.num_bucket', 4),
     "Unknown config.data key(s) ['num_bucket'] for task 'translate'"),
    ('mha_translate', _set('data.encoding', 'nope'),
     "config.data.encoding='nope' is not a text encoding Python knows"),
    ('mha_translate', _set('dtype', 'float16'),
     "config.dtype='float16' is not one of ['float32', 'bfloat16']"),
    ('mha_movies', _set('dtype', 'bf16'), "did you mean 'bfloat16'?"),
    ('mf_movies', _set('model.dtype', 'bfloat16'),
     "config.model.dtype is not a model key; the compute dtype is "
     "config.dtype, one of ['float32', 'bfloat16']."),
    # Cross-key rules.
    ('mha_translate', _set('data.path', 'pairs.tsv'),
     "config.data.path='pairs.tsv' is read only by a file source, but "
     "config.data.source is 'toy'; set config.data.source to one of ['tsv']."),
    ('mha_movies', _set('data.path', 'ml.zip'),
     "set config.data.source to one of ['movielens', 'interactions']."),
    ('mha_translate', _set('model.num_kv_heads', 3),
     'config.model.num_heads=2 must be divisible by '
     'config.model.num_kv_heads=3'),
    ('mha_movies', _set('model.num_kv_heads', 1),
     "config.model.num_kv_heads is not a field of model 'sasrec'"),
    ('mha_translate', _set('model.d_model', 15),
     'config.model.d_model=15 must be divisible by config.model.num_heads=2.'),
    # Sizes and steps: whole numbers >= 1.
    ('mha_translate', _set('batch_size', 0),
     'config.batch_size=0 is out of range: it must be a whole number >= 1.'),
    ('mha_translate', _set('num_train_steps', -5),
     'config.num_train_steps=-5 is out of range'),
    ('mha_translate', _set('eval_every_steps', 0),
     'config.eval_every_steps=0 is out of range'),
    ('mha_translate', _set('checkpoint_every_steps', 0),
     'config.checkpoint_every_steps=0 is out of range'),
    ('mha_translate', _set('log_every_steps', 0),
     'config.log_every_steps=0 is out of range'),
    ('mha_translate', _set('model.num_kv_heads', 0),
     'config.model.num_kv_heads=0 is out of range'),
    ('mha_translate', _set('model.num_layers', 0),
     'config.model.num_layers=0 is out of range'),
    ('mha_translate', _set('model.num_heads', 0),
     'config.model.num_heads=0 is out of range'),
    ('bahdanau_translate', _set('model.hidden_dim', 0),
     'config.model.hidden_dim=0 is out of range'),
    ('mha_translate', _set('eval.beam_size', 0),
     'config.eval.beam_size=0 is out of range'),
    ('mha_movies', _set('num_negatives', 0),
     'config.num_negatives=0 is out of range'),
    ('mha_translate', _set('data.num_buckets', 0),
     'config.data.num_buckets=0 is out of range'),
    ('mha_translate', _set('data.eval_batch_size', 0),
     'config.data.eval_batch_size=0 is out of range'),
    ('mha_translate', _set('model.mlp_dim', 0),
     'config.model.mlp_dim=0 is out of range: it must be a whole number'),
    # Counts >= 0.
    ('mha_translate', _set('seed', -1),
     'config.seed=-1 is out of range: it must be >= 0.'),
    ('mha_translate', _set('optimizer.warmup_steps', -1),
     'config.optimizer.warmup_steps=-1 is out of range: it must be >= 0.'),
    ('mha_translate', _set('data.num_threads', -2),
     'config.data.num_threads=-2 is out of range'),
    # Rates in [0, 1), fractions in [0, 1], rates > 0.
    ('mha_translate', _set('model.dropout_rate', 1.5),
     'config.model.dropout_rate=1.5 is out of range: it must be in [0, 1).'),
    ('mha_translate', _set('model.attention_dropout_rate', 1.0),
     'config.model.attention_dropout_rate=1.0 is out of range'),
    ('mha_translate', _set('label_smoothing', -0.1),
     'config.label_smoothing=-0.1 is out of range: it must be in [0, 1).'),
    ('mha_translate', _set('optimizer.b2', 1.0),
     'config.optimizer.b2=1.0 is out of range'),
    ('mha_translate', _set('optimizer.final_lr_fraction', 2.0),
     'config.optimizer.final_lr_fraction=2.0 is out of range: it must be in '
     '[0, 1].'),
    ('mha_translate', _set('data.test_fraction', 1.5),
     'config.data.test_fraction=1.5 is out of range'),
    ('mha_translate', _set('optimizer.learning_rate', -0.01),
     'config.optimizer.learning_rate=-0.01 is out of range: it must be > 0.'),
    ('mha_translate', _set('optimizer.grad_clip', -1.0),
     'config.optimizer.grad_clip=-1.0 is out of range: it must be >= 0.'),
    ('mha_movies', _set('eval.max_users', -1),
     'config.eval.max_users=-1 is out of range: it must be >= 0.'),
    # Types (ml_collections refuses most mistyped values itself).
    ('mha_translate', _set('eval.max_decode_length', -1),
     'config.eval.max_decode_length=-1 is out of range: it must be >= 0.'),
    ('mha_translate', _set('batch_size', True),
     'config.batch_size=True must be a number.'),
    # Missing keys.
    ('mha_translate', _delete('optimizer'), "The config has no 'optimizer'"),
    ('mha_movies', _delete('dtype'), "The config has no 'dtype'"),
]


@pytest.mark.parametrize('name, edit, message', CASES)
def test_every_bad_value_is_one_line_naming_it(name, edit, message):
  config = importlib.import_module(f'configs.{name}').get_config('smoke')
  edit(config)
  with pytest.raises(ValueError) as error:
    config_check.check(config)
  assert message in str(error.value)
  assert '\n' not in str(error.value)


def test_every_config_and_variant_passes():
  for name in ('mha_translate', 'bahdanau_translate', 'rnnencdec_translate',
               'mha_movies', 'bahdanau_movies', 'mf_movies'):
    module = importlib.import_module(f'configs.{name}')
    variants = ('smoke', 'tatoeba' if 'translate' in name else 'movielens')
    for arg in (None,) + variants:
      config_check.check(module.get_config(arg))


def test_batches_must_divide_over_the_devices():
  config = importlib.import_module('configs.mha_translate').get_config('smoke')
  config.data.eval_batch_size = 6
  with pytest.raises(ValueError, match=r'config.data.eval_batch_size=6 \(a '
                     r'global batch\) does not divide evenly over the 4 '
                     'devices; use a multiple of 4.'):
    config_check.check(config, num_devices=4)


def test_a_run_that_never_started_leaves_nothing_behind(tmp_path):
  config = importlib.import_module('configs.mha_translate').get_config('smoke')
  config.model.name = 'transfomer'
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match="did you mean 'transformer'"):
    train_lib.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()


def test_the_compute_dtype_may_change_on_resume():
  """Parameters and optimizer state are float32 in either dtype, so the
  checkpoint is the same: a change is recorded, not refused."""
  experiment, harmless = config_check.config_changes(
      {'dtype': 'float32', 'seed': 0}, {'dtype': 'bfloat16', 'seed': 0})
  assert (experiment, harmless) == ([], ["dtype: 'float32' -> 'bfloat16'"])
  # A run started before config.dtype existed resumes in float32.
  assert config_check.config_changes({'seed': 0}, {'dtype': 'float32',
                                                  'seed': 0}) == (
      [], ["dtype: 'absent' -> 'float32'"])
