"""MovieLens layouts, 'user item' files, leave-one-out, negatives, bad input."""

import os
import zipfile

import numpy as np
import pytest

from attention.data import movies

# (user, item, rating, timestamp), deliberately not in time order.
_RATINGS = [
    (1, 10, 4.0, 500), (1, 20, 3.5, 100), (1, 30, 5.0, 300), (1, 40, 2.0, 400),
    (1, 50, 4.5, 200), (2, 20, 4.0, 10), (2, 30, 4.0, 30), (2, 10, 1.0, 20),
    (2, 60, 3.0, 40), (2, 40, 5.0, 50), (2, 50, 2.0, 60), (3, 10, 5.0, 7),
    (3, 20, 5.0, 8), (10, 60, 4.0, 1), (10, 50, 4.0, 2), (10, 40, 4.0, 3),
    (10, 30, 4.0, 4), (10, 20, 4.0, 5),
]
_TITLES = {10: 'Toy Story (1995)', 20: 'Jumanji (1995)', 30: 'Heat (1995)',
           40: 'Misérables, Les (1995)', 50: 'Casino (1995)',
           60: 'Sabrina (1995)'}
# Sorted by time, users with >= 5 interactions (user 3 is dropped).
_EXPECTED = {'1': [20, 50, 30, 40, 10], '2': [20, 10, 30, 60, 40, 50],
             '10': [60, 50, 40, 30, 20]}


def _write_layout(folder, layout):
  os.makedirs(folder, exist_ok=True)
  if layout == 'ml-latest-small':
    with open(os.path.join(folder, 'ratings.csv'), 'w') as f:
      f.write('userId,movieId,rating,timestamp\n')
      f.writelines(f'{u},{i},{r},{t}\n' for u, i, r, t in _RATINGS)
    with open(os.path.join(folder, 'movies.csv'), 'w', encoding='utf-8') as f:
      f.write('movieId,title,genres\n')
      f.writelines(f'{i},"{t}",Drama\n' if ',' in t else f'{i},{t},Drama\n'
                   for i, t in _TITLES.items())
  elif layout == 'ml-1m':
    with open(os.path.join(folder, 'ratings.dat'), 'w') as f:
      f.writelines(f'{u}::{i}::{int(r)}::{t}\n' for u, i, r, t in _RATINGS)
    with open(os.path.join(folder, 'movies.dat'), 'w',
              encoding='latin-1') as f:
      f.writelines(f'{i}::{t}::Drama\n' for i, t in _TITLES.items())
  else:  # ml-100k
    with open(os.path.join(folder, 'u.data'), 'w') as f:
      f.writelines(f'{u}\t{i}\t{int(r)}\t{t}\n' for u, i, r, t in _RATINGS)
    with open(os.path.join(folder, 'u.item'), 'w', encoding='latin-1') as f:
      f.writelines(f'{i}|{t}|01-Jan-1995||http://x|0|1\n'
                   for i, t in _TITLES.items())
  with open(os.path.join(folder, 'README.txt'), 'w') as f:
    f.write('GroupLens licence: research use, acknowledge the dataset.\n')
  return folder


def _zip_folder(folder, path):
  with zipfile.ZipFile(path, 'w') as z:
    for name in sorted(os.listdir(folder)):
      z.write(os.path.join(folder, name),
              f'{os.path.basename(folder)}/{name}')
  return str(path)


def _check(data):
  assert data.num_users == 3
  raw = {u: [int(data.item_ids[i]) for i in s]
         for u, s in zip(data.user_ids, data.sequences)}
  assert raw == _EXPECTED
  assert data.item_ids[0] == '<pad>' and data.titles[0] == '<pad>'
  assert data.titles[data.item_ids.index('40')] == 'Misérables, Les (1995)'
  assert data.num_items == 6 and min(min(s) for s in data.sequences) == 1


@pytest.mark.parametrize('layout', ['ml-latest-small', 'ml-1m', 'ml-100k'])
@pytest.mark.parametrize('as_zip', [False, True])
def test_movielens_layouts(tmp_path, layout, as_zip):
  folder = _write_layout(str(tmp_path / layout), layout)
  path = _zip_folder(folder, tmp_path / f'{layout}.zip') if as_zip else folder
  _check(movies.load_movies({'source': 'movielens', 'path': path}))


def test_parent_folder_and_folder_holding_the_zip(tmp_path):
  folder = _write_layout(str(tmp_path / 'parent' / 'ml-1m'), 'ml-1m')
  _check(movies.load_movies({'source': 'movielens',
                             'path': str(tmp_path / 'parent')}))
  holder = tmp_path / 'holder'
  holder.mkdir()
  _zip_folder(folder, holder / 'ml-1m.zip')
  (holder / 'README.txt').write_text('licence')
  _check(movies.load_movies({'source': 'movielens', 'path': str(holder)}))


def test_a_truncated_zip_says_so(tmp_path):
  folder = _write_layout(str(tmp_path / 'ml-1m'), 'ml-1m')
  path = _zip_folder(folder, tmp_path / 'ml-1m.zip')
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  for given in (str(path), str(tmp_path)):  # the zip, or a folder holding it
    with pytest.raises(ValueError, match=r'ml-1m.zip is not a valid .zip '
                       r'archive \(truncated or corrupt\?\); download it '
                       'again.'):
      movies.load_movies({'source': 'movielens', 'path': given})


def test_interactions_file_keeps_file_order(tmp_path):
  path = tmp_path / 'ml-1m.txt'
  lines = ['7 3', '7 1', '7 2', '8 5', '7 9', '8 1', '8 2', '8 3', '7 4',
           '8 4', '9 1']
  path.write_text('\n'.join(lines) + '\n')
  data = movies.load_movies({'source': 'interactions', 'path': str(path)})
  raw = {u: [data.item_ids[i] for i in s]
         for u, s in zip(data.user_ids, data.sequences)}
  assert raw == {'7': ['3', '1', '2', '9', '4'], '8': ['5', '1', '2', '3', '4']}
  assert data.titles == data.item_ids  # No titles: the raw ids.


def test_leave_one_out_never_leaks_held_out_items(tmp_path):
  folder = _write_layout(str(tmp_path / 'ml'), 'ml-latest-small')
  data = movies.load_movies({'source': 'movielens', 'path': folder,
                             'max_len': 3})
  assert len(data.test) == len(data.validation) == data.num_users
  for u, seq in enumerate(data.sequences):
    assert data.test.targets[u] == seq[-1]
    assert data.validation.targets[u] == seq[-2]
    np.testing.assert_array_equal(data.test.histories[u], seq[:-1])
  batch = data.train.collate(np.arange(len(data.train)), 3)
  for r, ex in enumerate(batch['example']):
    seq = data.sequences[data.train.users[ex] - 1]
    n = batch['length'][r]
    assert n == min(3, len(seq) - 3)
    # Inputs and targets come from s_1..s_{n-2}: the most recent window.
    np.testing.assert_array_equal(batch['inputs'][r, :n], seq[-3 - n:-3])
    np.testing.assert_array_equal(batch['targets'][r, :n], seq[-2 - n:-2])
    # Positions: the test item and the validation item are never there.
    # (Checked by position, since an item id may legitimately repeat.)
    assert (batch['inputs'][r, n:] == 0).all()
  # Popularity counts only the training part.
  expected = np.bincount(np.concatenate([s[:-2] for s in data.sequences]),
                         minlength=data.num_items + 1)
  expected[0] = 0
  np.testing.assert_array_equal(data.popularity, expected)
  test_batch = data.test.collate(np.array([0, -1]), 3)
  assert test_batch['target'][0] == data.sequences[0][-1]
  np.testing.assert_array_equal(test_batch['inputs'][0],
                                data.sequences[0][-4:-1])
  assert not test_batch['mask'][1].any() and test_batch['example'][1] == -1


def test_min_interactions_and_min_rating(tmp_path):
  folder = _write_layout(str(tmp_path / 'ml'), 'ml-latest-small')
  data = movies.load_movies({'source': 'movielens', 'path': folder,
                             'min_interactions': 3})
  assert data.num_users == 3  # User 3 (2 ratings) still dropped.
  data = movies.load_movies({'source': 'movielens', 'path': folder,
                             'min_interactions': 3, 'min_rating': 4.0})
  assert data.num_users == 3
  with pytest.raises(ValueError, match='min_interactions must be >= 1'):
    movies.load_movies({'source': 'movielens', 'path': folder,
                        'min_interactions': 0})
  with pytest.raises(ValueError, match='No user has >= 50'):
    movies.load_movies({'source': 'movielens', 'path': folder,
                        'min_interactions': 50})


def test_sampled_negatives_exclude_the_users_items(tmp_path):
  lines = [f'{u} {i}' for u in range(1, 6) for i in range(u, u + 6)]
  lines += [f'9 {i}' for i in range(20, 40)]
  path = tmp_path / 'inter.txt'
  path.write_text('\n'.join(lines))
  data = movies.load_movies({'source': 'interactions', 'path': str(path)})
  for strategy in ('uniform', 'popularity'):
    neg = movies.sample_negatives(data, data.test, 10, strategy=strategy,
                                  seed=1)
    again = movies.sample_negatives(data, data.test, 10, strategy=strategy,
                                    seed=1)
    np.testing.assert_array_equal(neg, again)
    assert neg.shape == (len(data.test), 10) and (neg > 0).all()
    for row, user in enumerate(data.test.users):
      assert len(set(neg[row])) == 10
      assert not set(neg[row]) & set(data.sequences[user - 1])


def test_movielens_bad_input(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    movies.load_movies({'source': 'movielens', 'path': str(tmp_path / 'no')})
  empty = tmp_path / 'only-movies'
  empty.mkdir()
  (empty / 'movies.csv').write_text('movieId,title,genres\n1,A,B\n')
  with pytest.raises(FileNotFoundError,
                     match=r"none of \['ratings.csv', 'ratings.dat', "
                     r"'u.data'\].*found: \['movies.csv'\]"):
    movies.load_movies({'source': 'movielens', 'path': str(empty)})
  folder = _write_layout(str(tmp_path / 'ml'), 'ml-latest-small')
  with open(os.path.join(folder, 'ratings.csv'), 'a') as f:
    f.write('1,70,not-a-number,600\n1,80\n')
  with pytest.raises(ValueError, match=r'ratings.csv, line 20: rating and '):
    movies.load_movies({'source': 'movielens', 'path': folder})
  data = movies.load_movies({'source': 'movielens', 'path': folder,
                             'on_bad_line': 'skip'})
  assert data.info['skipped_lines'] == 2 and data.num_users == 3
  open(os.path.join(folder, 'ratings.csv'), 'w').close()
  with pytest.raises(ValueError, match='is empty'):
    movies.load_movies({'source': 'movielens', 'path': folder})
  bad = tmp_path / 'bad.txt'
  bad.write_bytes(b'1 2\n1 3\n1\n1 4\n\xff\xfe 5\n')
  with pytest.raises(ValueError, match=r"bad.txt, line 3: expected 'user "):
    movies.load_movies({'source': 'interactions', 'path': str(bad)})
  with pytest.raises(ValueError, match=r'nothing to train on'):
    movies.load_movies({'source': 'interactions', 'path': str(bad),
                        'on_bad_line': 'skip', 'min_interactions': 3})


def test_unknown_movie_source():
  with pytest.raises(ValueError, match=r"valid sources: \['toy', "
                     r"'movielens', 'interactions', 'tfds'\]"):
    movies.load_movies({'source': 'netflix'})


def test_ids_are_renumbered_in_numeric_order(tmp_path):
  path = tmp_path / 'inter.txt'
  path.write_text(''.join(f'{u} {i}\n' for u in ('10', '9', '100')
                          for i in ('30', '4', '200', '4')))
  data = movies.load_movies({'source': 'interactions', 'path': str(path),
                             'min_interactions': 4})
  assert data.user_ids == ['9', '10', '100']
  assert data.item_ids == ['<pad>', '4', '30', '200']
