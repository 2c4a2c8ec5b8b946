"""TFDS sources without TensorFlow and without network.

Three ways in, none of which downloads:
* `tfds.testing.mock_data` for the real catalog names (ted_hrlr_translate,
  movielens), which works without TensorFlow for `tfds.data_source`;
* tiny datasets built here and prepared as real ArrayRecord files in tmp_path
  (TFDS writes ArrayRecord without TensorFlow), read by name and data_dir;
* an unprepared catalog dataset, which must fail at once with instructions.
"""

import tempfile
import time

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from attention.data import movies  # pylint: disable=g-import-not-at-top
from attention.data import pipeline  # pylint: disable=g-import-not-at-top
from attention.data import translation  # pylint: disable=g-import-not-at-top


class TinyParallel(tfds.core.GeneratorBasedBuilder):
  """German-English toy pairs, train and test splits only."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'de': tfds.features.Text(), 'en': tfds.features.Text()}),
        supervised_keys=('de', 'en'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0, 60),
            'test': self._generate_examples(100, 110)}

  def _generate_examples(self, start, stop):
    animals = ('Katze', 'Hund', 'Maus', 'Vogel')
    english = ('cat', 'dog', 'mouse', 'bird')
    for i in range(start, stop):
      yield i, {'de': f'die {animals[i % 4]} Nummer {i} läuft',
                'en': f'the {english[i % 4]} number {i} walks'}


class TinyRatings(tfds.core.GeneratorBasedBuilder):
  """A movielens-shaped ratings set."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'user_id': tfds.features.Text(), 'movie_id': tfds.features.Text(),
            'movie_title': tfds.features.Text(), 'timestamp': np.int64,
            'user_rating': np.float32}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    key = 0
    for user in range(4):
      for step in range(6):
        item = (user * 2 + step) % 9
        yield key, {'user_id': f'u{user}', 'movie_id': str(item),
                    'movie_title': f'Film {item}', 'timestamp': 100 - step,
                    'user_rating': 4.0}
        key += 1


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('tfds'))
  for cls in (TinyParallel, TinyRatings):
    cls(data_dir=path, file_format='array_record').download_and_prepare()
  return path


def test_prepared_array_record_translation(data_dir, tmp_path):
  config = {'source': 'tfds', 'name': 'tiny_parallel',
            'tfds_data_dir': data_dir, 'vocab_size': 60,
            'validation_fraction': 0.2}
  data = translation.load_translation(config, str(tmp_path))
  assert data.info['src_key'] == 'de' and data.info['tgt_key'] == 'en'
  # No validation split in the dataset: carved from train by source sentence.
  assert len(data.test) == 10
  assert len(data.train) + len(data.validation) == 60
  assert len(data.validation) > 0
  assert not set(data.train.src_text) & set(data.validation.src_text)
  assert 'läuft' in data.train.src_text[0]
  assert data.tgt_vocab.decode(data.test.tgt[0]) == data.test.tgt_text[0]
  batch = next(pipeline.batch_iterator(data.train, 4, process_index=0,
                                       process_count=1, num_threads=0))
  assert batch['src'].dtype == np.int32 and batch['src'].shape[0] == 4


def test_prepared_array_record_ratings(data_dir):
  data = movies.load_movies({'source': 'tfds', 'name': 'tiny_ratings',
                             'tfds_data_dir': data_dir})
  assert data.num_users == 4 and data.info['interactions'] == 24
  # Sorted by timestamp (written newest first).
  first = data.sequences[0]
  assert [data.item_ids[i] for i in first] == ['5', '4', '3', '2', '1', '0']
  assert data.titles[data.item_ids.index('3')] == 'Film 3'


def test_mock_catalog_translation_dataset(tmp_path):
  with tfds.testing.mock_data(num_examples=30,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    data = translation.load_translation(
        {'source': 'tfds', 'name': 'ted_hrlr_translate/pt_to_en',
         'vocab_size': 200}, str(tmp_path))
  assert (data.info['src_key'], data.info['tgt_key']) == ('pt', 'en')
  assert len(data.train) == len(data.validation) == len(data.test) == 30


def test_mock_catalog_movielens():
  def ratings(self, split, **kwargs):
    del self, split, kwargs
    return [{'user_id': str(u).encode(), 'movie_id': str(u + j).encode(),
             'movie_title': f'Movie {u + j}'.encode(), 'timestamp': j,
             'user_rating': 3.0} for u in range(5) for j in range(5)]
  with tfds.testing.mock_data(as_data_source_fn=ratings,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    data = movies.load_movies({'source': 'tfds',
                               'name': 'movielens/1m-ratings'})
  assert data.num_users == 5 and data.num_items == 9
  assert data.titles[1] == 'Movie 0'


def test_unprepared_dataset_fails_fast_with_instructions(tmp_path):
  start = time.monotonic()
  with pytest.raises(FileNotFoundError,
                     match=r'not prepared(.|\n)*tfds build '
                     r'ted_hrlr_translate/pt_to_en --file_format=array_record'):
    translation.load_translation(
        {'source': 'tfds', 'name': 'ted_hrlr_translate/pt_to_en',
         'tfds_data_dir': str(tmp_path)})
  assert time.monotonic() - start < 30


def test_unknown_tfds_name():
  with pytest.raises(ValueError, match='Unknown TFDS dataset .*ratings'):
    movies.load_movies({'source': 'tfds', 'name': 'no_such_dataset_xyz'})
  with pytest.raises(ValueError, match='config.data.name must name'):
    movies.load_movies({'source': 'tfds'})


def test_no_temporary_folders_are_left_behind(tmp_path, monkeypatch):
  """TFDS makes a tempfile.mkdtemp('tfds') folder per dataset opened and
  never removes it; the readers give it a scratch folder that goes away."""
  scratch = tmp_path / 'tmp'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  with tfds.testing.mock_data(num_examples=5,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    translation.load_translation(
        {'source': 'tfds', 'name': 'ted_hrlr_translate/pt_to_en',
         'vocab_size': 60}, str(tmp_path / 'work'))
  with pytest.raises(FileNotFoundError):
    translation.load_translation(
        {'source': 'tfds', 'name': 'ted_hrlr_translate/pt_to_en',
         'tfds_data_dir': str(tmp_path / 'none')})
  assert not list(scratch.iterdir())
