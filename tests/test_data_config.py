"""config.data defaults and validation."""

import pytest

from attention.data import config as data_config
from attention.data import load_movies
from attention.data import load_translation


def test_default_configs_load():
  c = data_config.get_config('translate')
  c.num_train, c.num_validation, c.num_test = 20, 5, 5
  data = load_translation(c)
  assert len(data.train) == 20 and data.info['source'] == 'toy'
  m = data_config.get_config('movies')
  m.num_users, m.num_items, m.min_seq_len, m.max_seq_len = 10, 30, 5, 8
  movies = load_movies(m)
  assert movies.num_items == 30


def test_placeholders_can_be_set():
  c = data_config.get_config('translate')
  assert c.path is None and c.source == 'toy'
  c.path = 'x.tsv'
  c.max_len = 64
  assert (c.path, c.max_len) == ('x.tsv', 64)


def test_unknown_key_lists_the_valid_ones():
  c = data_config.get_config('movies')
  c.vocab_size = 100  # A translation key.
  with pytest.raises(ValueError, match=r"\['vocab_size'\].*valid keys: "):
    load_movies(c)
  with pytest.raises(ValueError, match="task must be 'translate' or 'movies'"):
    data_config.get_config('images')


def test_every_key_is_documented():
  for task in ('translate', 'movies'):
    table = data_config.describe(task)
    for key in data_config.get_config(task):
      assert f'`{key}`' in table


def test_validate_fills_in_every_default():
  given = {'source': 'toy', 'num_train': 7, 'path': None}
  filled = data_config.validate(given, 'translate')
  assert set(filled) == set(data_config.get_config('translate'))
  assert filled.num_train == 7            # given
  defaults = data_config.get_config('translate')
  assert filled.num_validation == defaults.num_validation  # not given
  assert filled.path is None              # a default of None stays None
  assert given == {'source': 'toy', 'num_train': 7, 'path': None}  # a copy
  with pytest.raises(ValueError, match=r"Unknown config.data.source 'csv' "
                     r"for task 'movies'; valid sources"):
    data_config.validate({'source': 'csv'}, 'movies')


def test_batching_keys_of_either_task():
  batching = data_config.batching({'num_buckets': 3, 'num_users': 5})
  defaults = data_config.get_config('movies')
  assert batching.num_buckets == 3
  assert batching.prefetch == defaults.prefetch
  assert 'num_users' not in batching
  assert batching.eval_batch_size is None
