"""benchmarks/device.sh and benchmarks/device.py, the one-shot GPU benchmark.

The GPU run cannot happen here; its dry run (the same code on CPU at tiny
shapes) can, so that the script does not rot between GPU runs. To stay within
the suite's time, the dry run here is a part of the whole (`bash
benchmarks/device.sh --dry-run`: L=128 and 256, causal and not, both configs
in both dtypes, 1-2 minutes): L=128 causal, and the train step of
configs/mha_movies.py:smoke in bfloat16.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import device  # pylint: disable=g-import-not-at-top,wrong-import-position


# device.sh runs $PYTHON: this interpreter, whatever python3 is on the PATH.
ENV = {**os.environ, 'PYTHON': sys.executable}


def section(text):
  """The generated GPU section of a BENCHMARKS.md text (between markers)."""
  assert device.BEGIN in text and device.END in text
  return text.split(device.BEGIN, 1)[1].split(device.END, 1)[0]


def test_device_sh_checks_imports_and_prints_versions():
  out = subprocess.run(['bash', 'benchmarks/device.sh', '--check-only'],
                       cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=60, check=False)
  assert out.returncode == 0, out.stdout + out.stderr
  assert 'jax ' in out.stdout and 'flax ' in out.stdout
  assert 'torch' in out.stdout  # a version, or "not installed"
  assert 'imports present' in out.stdout


def _finite_or_reason(result):
  if 'error' in result or 'skipped' in result:
    return bool(result.get('error') or result.get('skipped'))
  return all(math.isfinite(result[k]) and result[k] > 0
             for k in result if k in ('ms', 'tflops', 'tokens_per_s',
                                      'ms_per_step', 'flops_per_step', 'mfu'))


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('device')
  markdown = tmp / 'BENCHMARKS.md'
  shutil.copy(os.path.join(ROOT, 'BENCHMARKS.md'), markdown)
  out = subprocess.run(
      ['bash', 'benchmarks/device.sh', '--dry-run', '--lengths', '128',
       '--causal', 'causal', '--train', 'configs/mha_movies.py:smoke',
       '--dtypes', 'bfloat16', '--out', str(tmp / 'device.json'),
       '--markdown', str(markdown), '--write_markdown'],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
      check=False)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert 'jax ' in out.stdout and 'Targets:' in out.stdout
  with open(tmp / 'device.json') as f:
    results = json.load(f)
  return results, markdown


def test_dry_run_records_every_case(dry_run):
  results, _ = dry_run
  assert results['meta']['dry_run'] and results['meta']['interrupted'] is None
  assert results['peak']['peak'] > 0
  rows = results['attention']
  assert [(r['L'], r['causal']) for r in rows] == [(128, True)]
  for row in rows:
    assert set(row['results']) == set(device.COLUMNS)
    for impl, result in row['results'].items():
      assert _finite_or_reason(result), (impl, result)
    # Pallas runs interpreted on CPU; cuDNN is skipped there with the reason.
    assert 'GPU' in row['results']['cudnn']['skipped']
    for impl in ('xla', 'chunked', 'pallas', 'None'):
      assert 'ms' in row['results'][impl], row['results'][impl]
    assert row['results']['pallas']['ran'] == ['pallas']
    assert row['results']['None']['ran'] == ['chunked']  # CPU, T·S = 128²
  [train] = results['train']
  assert (train['config'], train['dtype']) == ('configs/mha_movies.py:smoke',
                                               'bfloat16')
  assert _finite_or_reason(train), train
  assert 'tokens_per_s' in train and train['finite_loss']


def test_dry_run_markdown(dry_run):
  results, markdown = dry_run
  rendered = device.render_markdown(results)
  assert device.NOT_MEASURED not in rendered
  assert 'Dry run on CPU' in rendered
  for heading in ('### Targets', '### Attention forward+backward, bf16, causal',
                  '### Train step'):
    assert heading in rendered
  assert 'non-causal' not in rendered.split('### Targets')[1]  # not run
  # The dry run has no torch and no L >= 4096: one target to judge.
  assert '| implementation=None vs the fastest single path' in rendered
  with open(markdown) as f:
    text = f.read()
  assert section(text).strip() == rendered.strip()
  with open(os.path.join(ROOT, 'BENCHMARKS.md')) as f:
    original = f.read()
  # Everything outside the markers is kept.
  assert (text.split(device.BEGIN)[0] == original.split(device.BEGIN)[0]
          and text.split(device.END)[1] == original.split(device.END)[1])


def test_benchmarks_md_section_matches_the_json():
  """Until a GPU run is committed, BENCHMARKS.md holds the placeholder."""
  with open(os.path.join(ROOT, 'BENCHMARKS.md')) as f:
    text = section(f.read())
  saved = os.path.join(ROOT, 'benchmarks', 'device.json')
  if not os.path.exists(saved):
    assert device.NOT_MEASURED in text
    assert text.strip() == device.PLACEHOLDER.strip()
  else:
    with open(saved) as f:
      results = json.load(f)
    assert not results['meta']['dry_run']
    assert text.strip() == device.render_markdown(results).strip()


def test_dry_run_numbers_stay_out_of_benchmarks_md(tmp_path):
  results = {'meta': {'dry_run': True}}
  with pytest.raises(SystemExit, match='dry run'):
    device.write_markdown(os.path.join(ROOT, 'BENCHMARKS.md'), results)


def test_bfloat16_without_config_dtype_is_an_error(monkeypatch):
  """A checkout whose configs lack config.dtype cannot measure bfloat16."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(device.sweep, 'load_config',
                      lambda arg: ml_collections.ConfigDict({'task': 'movies'}))
  with pytest.raises(device.DtypeUnsupported,
                     match='config.dtype is not supported by this checkout'):
    device.train_config('configs/mha_movies.py', 'bfloat16')
  assert 'dtype' not in device.train_config('configs/mha_movies.py',
                                            'float32')


def test_targets_verdicts():
  """PASS / FAIL / — from rows the way a GPU run records them."""
  def row(L, causal, times_ms):
    flops = device.attention_flops(1, 16, L, 128, causal)
    results = {impl: {'skipped': 'not run'} for impl in device.COLUMNS}
    for impl, ms in times_ms.items():
      tflops = flops / (ms / 1e3) / 1e12
      results[impl] = {'ms': ms, 'tflops': tflops, 'peak_share': tflops / 800,
                       'ran': ['cudnn' if impl == 'None' else impl]}
    return {'L': L, 'B': 1, 'causal': causal, 'results': results}
  results = {'attention': [
      row(4096, True, {'cudnn': 1.0, 'chunked': 3.0, 'None': 1.05,
                       'torch': 1.2}),
      row(8192, True, {'cudnn': 4.0, 'None': 4.5, 'torch': 3.0}),
      row(8192, False, {'cudnn': 2.0}),
  ]}
  verdicts = {name: (achieved, verdict)
              for name, _, achieved, verdict in device.targets(results)}
  assert verdicts['best JAX path vs torch SDPA, causal fwd+bwd, L=4096'] == (
      '1.20× (cudnn)', 'PASS')
  assert verdicts['best JAX path vs torch SDPA, causal fwd+bwd, L=8192'] == (
      '0.75× (cudnn)', 'FAIL')
  # 3.5 · 4 · 16 · 8192² · 128 / 2 FLOPs in 4 ms: 240 TFLOP/s of 800.
  share = 'best JAX path, share of the bf16 peak, {} fwd+bwd, L=8192'
  assert verdicts[share.format('causal')] == ('30% (cudnn)', 'FAIL')
  assert verdicts[share.format('non-causal')] == ('120% (cudnn)', 'PASS')
  none = verdicts['implementation=None vs the fastest single path, worst '
                  '(L, causal)']
  assert none == ('1.12× (L=8192, causal; None ran cudnn)', 'FAIL')
  # Nothing measured: — rather than a verdict.
  empty = row(4096, True, {})
  [(_, _, achieved, verdict), *_] = device.targets({'attention': [empty]})
  assert verdict == '—' and 'not measured' in achieved
