"""TSV translation files: formats, splits, SentencePiece, bad input."""

import os
import zipfile

import numpy as np
import pytest

from attention.data import tokenizers
from attention.data import translation
from attention.data import translation_files

_EN = ['Go.', 'Hi.', 'Run!', 'Who?', 'Wow!', 'I see.', 'I won.', 'Help me.',
       'Be nice.', 'Call me.', 'Come in.', 'Get out!', 'Hold on.', 'I agree.',
       "I'm sad.", 'Keep it.', 'Tom won.', 'We lost.', 'Be quiet.',
       'Go away.', 'I am old.', 'See you.', 'Stop it.', 'Thank you.']
_ES = ['Ve.', 'Hola.', '¡Corre!', '¿Quién?', '¡Órale!', 'Ya veo.',
       'Gané.',
       'Ayúdame.', 'Sé amable.', 'Llámame.', 'Entra.', '¡Sal!', 'Espera.',
       'De acuerdo.', 'Estoy triste.', 'Quédatelo.', 'Tom ganó.',
       'Perdimos.', 'Silencio.', 'Vete.', 'Soy viejo.', 'Nos vemos.',
       'Para.', 'Gracias.']


def _lines(n=240, extra_column=True):
  out = []
  for i in range(n):
    en, es = _EN[i % len(_EN)], _ES[i % len(_ES)]
    if i >= len(_EN):
      en, es = f'{en[:-1]} {i}{en[-1]}', f'{es[:-1]} {i}{es[-1]}'
    attribution = '\tCC-BY 2.0 (France) Attribution: tatoeba.org #1' if (
        extra_column) else ''
    out.append(f'{en}\t{es}{attribution}')
  return out


def _write(path, lines, encoding='utf-8'):
  with open(path, 'wb') as f:
    f.write(('\n'.join(lines) + '\n').encode(encoding))
  return str(path)


def _zip(tmp_path, lines):
  path = tmp_path / 'spa-eng.zip'
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('spa-eng/_about.txt', 'Attribution: www.manythings.org/anki')
    z.writestr('spa-eng/spa.txt', '\n'.join(lines) + '\n')
  return str(path)


def test_txt_zip_and_folder_read_the_same(tmp_path):
  lines = _lines()
  txt = translation_files.read_tsv(_write(tmp_path / 'spa.txt', lines))
  zipped = translation_files.read_tsv(_zip(tmp_path, lines))
  folder = tmp_path / 'folder'
  folder.mkdir()
  _write(folder / '_about.txt', ['about'])
  _write(folder / 'spa.txt', lines)
  from_dir = translation_files.read_tsv(str(folder))
  assert txt.src == zipped.src == from_dir.src
  assert txt.tgt == zipped.tgt == from_dir.tgt
  assert len(txt) == 240 and txt.src[0] == 'Go.' and txt.tgt[0] == 'Ve.'


def test_either_column_as_source(tmp_path):
  path = _write(tmp_path / 'spa.txt', _lines(extra_column=False))
  forward = translation_files.read_tsv(path, src_column=0)
  reverse = translation_files.read_tsv(path, src_column=1)
  assert forward.src == reverse.tgt and forward.tgt == reverse.src
  with pytest.raises(ValueError, match='src_column must be 0 or 1'):
    translation_files.read_tsv(path, src_column=2)


def test_split_is_deterministic_and_never_leaks_test_sources(tmp_path):
  lines = _lines()
  # The same source with two different translations.
  lines += ['Go.\tVete.', 'Go.\tVaya.', 'go.\t¡Vete!']
  pairs = translation_files.read_tsv(_write(tmp_path / 'spa.txt', lines))
  a = translation_files.split_pairs(pairs, validation_fraction=0.1,
                                    test_fraction=0.2, seed=0)
  shuffled = translation_files.Pairs(pairs.src[::-1], pairs.tgt[::-1])
  b = translation_files.split_pairs(shuffled, validation_fraction=0.1,
                                    test_fraction=0.2, seed=0)
  for name in a:
    assert sorted(a[name].src) == sorted(b[name].src)  # Order-independent.
  train = {s.lower() for s in a['train'].src}
  assert not train & {s.lower() for s in a['test'].src}
  assert not train & {s.lower() for s in a['validation'].src}
  assert sum(len(p) for p in a.values()) == len(pairs)
  assert len(a['test']) > 0 and len(a['validation']) > 0


def test_load_translation_tsv_with_cached_sentencepiece(tmp_path):
  path = _zip(tmp_path, _lines())
  config = {'source': 'tsv', 'path': path, 'vocab_size': 120,
            'validation_fraction': 0.1, 'test_fraction': 0.1}
  workdir = str(tmp_path / 'work')
  data = translation.load_translation(config, workdir)
  cached = sorted(os.listdir(os.path.join(workdir, 'vocab')))
  assert [c.split('-')[0] for c in cached] == ['src', 'tgt']
  mtimes = [os.path.getmtime(os.path.join(workdir, 'vocab', c))
            for c in cached]
  again = translation.load_translation(config, workdir)  # Resume: reuse.
  assert sorted(os.listdir(os.path.join(workdir, 'vocab'))) == cached
  assert mtimes == [os.path.getmtime(os.path.join(workdir, 'vocab', c))
                    for c in cached]
  assert again.src_vocab.model_proto == data.src_vocab.model_proto
  # A cached model cut off by a kill is trained again, not a traceback.
  src_model = os.path.join(workdir, 'vocab', cached[0])
  with open(src_model, 'r+b') as f:
    f.truncate(100)
  third = translation.load_translation(config, workdir)
  assert third.src_vocab.model_proto == data.src_vocab.model_proto
  assert os.path.getsize(src_model) == len(data.src_vocab.model_proto)
  for split in (data.train, data.validation, data.test):
    for ids, text in zip(split.tgt, split.tgt_text):
      assert data.tgt_vocab.decode(ids) == text  # Detokenised exactly.
  # Test sentences are encoded with the vocabulary trained on train only.
  assert all(ids.dtype == np.int32 for ids in data.test.src)


def test_max_len_drops_only_training_pairs(tmp_path):
  lines = _lines() + ['This is a rather long sentence with many words in it '
                      'indeed.\tEsta es una frase bastante larga con muchas '
                      'palabras.']
  config = {'source': 'tsv', 'path': _write(tmp_path / 'a.txt', lines),
            'vocab_size': 100, 'max_len': 12}
  data = translation.load_translation(config)
  assert data.train.lengths.max() <= 12
  assert data.info['train/size'] == len(data.train)


@pytest.mark.parametrize('content,match', [
    (None, 'does not exist'),
    (b'', 'is empty'),
    (b'just one column\nanother line\n', 'line 1: expected source<TAB>target'),
])
def test_bad_files_fail_clearly(tmp_path, content, match):
  path = tmp_path / 'data.txt'
  if content is not None:
    path.write_bytes(content)
  with pytest.raises((ValueError, FileNotFoundError), match=match):
    translation_files.read_tsv(str(path))


def test_malformed_line_error_or_skip(tmp_path):
  lines = _lines(30)
  lines[6] = 'no tab on this line'
  raw = ('\n'.join(lines) + '\n').encode('utf-8')
  raw += b'caf\xe9 latin-1\tbad bytes\n'  # Line 31: not UTF-8.
  path = tmp_path / 'spa.txt'
  path.write_bytes(raw)
  with pytest.raises(ValueError, match=r'spa\.txt, line 7: expected'):
    translation_files.read_tsv(str(path))
  pairs = translation_files.read_tsv(str(path), on_bad_line='skip')
  assert len(pairs) == 29 and pairs.skipped == 2
  path.write_bytes(('\n'.join(_lines(5)) + '\n').encode() + b'\xff\xfe\tx\n')
  with pytest.raises(ValueError, match=r'line 6: bytes that are not valid'):
    translation_files.read_tsv(str(path))
  with pytest.raises(ValueError, match="on_bad_line must be one of"):
    translation_files.read_tsv(str(path), on_bad_line='ignore')


def test_all_lines_bad_in_skip_mode_is_an_error(tmp_path):
  path = _write(tmp_path / 'one.txt', ['a', 'b', 'c'])
  with pytest.raises(ValueError, match=r'no valid .* \(3 malformed'):
    translation_files.read_tsv(path, on_bad_line='skip')


def test_zip_with_several_candidates_needs_a_member(tmp_path):
  path = tmp_path / 'two.zip'
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('a.txt', 'x\ty\n')
    z.writestr('b.txt', 'u\tv\n')
  with pytest.raises(FileNotFoundError, match='zip_member'):
    translation_files.read_tsv(str(path))
  assert translation_files.read_tsv(str(path), member='b.txt').src == ['u']
  with pytest.raises(FileNotFoundError, match="no member 'c.txt'"):
    translation_files.read_tsv(str(path), member='c.txt')


def test_sentencepiece_special_ids_and_decode():
  vocab = tokenizers.train_sentencepiece(
      ['hello world', 'hello there', 'the world is big'] * 20, 40)
  ids = vocab.encode('hello world')
  assert ids and all(i > tokenizers.UNK_ID for i in ids)  # No specials.
  padded = [tokenizers.BOS_ID] + ids + [tokenizers.EOS_ID, 0, 0, 17]
  assert vocab.decode(padded) == 'hello world'
  assert len(vocab.tokens(ids)) == len(ids)


def test_unknown_source_and_key_list_the_valid_ones():
  with pytest.raises(ValueError, match=r"valid sources: \['toy', 'tsv', "):
    translation.load_translation({'source': 'csv'})
  with pytest.raises(ValueError, match=r"Unknown config.data key\(s\) "
                     r"\['pth'\].*valid keys"):
    translation.load_translation({'source': 'tsv', 'pth': 'x'})
  with pytest.raises(ValueError, match='config.data.path must be set'):
    translation.load_translation({'source': 'tsv'})


def test_detokenised_output_scores_full_bleu(tmp_path):
  sacrebleu = pytest.importorskip('sacrebleu')
  config = {'source': 'tsv', 'path': _zip(tmp_path, _lines()),
            'vocab_size': 120}
  data = translation.load_translation(config)
  hyps = [data.tgt_vocab.decode(ids) for ids in data.test.tgt]
  score = sacrebleu.corpus_bleu(hyps, [data.test.tgt_text])
  assert score.score == pytest.approx(100.0)
