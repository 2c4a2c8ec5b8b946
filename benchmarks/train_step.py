"""Train-step throughput of the translate Transformer, by attention layer.

  python benchmarks/train_step.py                # configs/mha_translate.py
  python benchmarks/train_step.py --steps 20     # shorter

Runs the project's training step
(``attention.training.train_lib.Trainer.train_step`` on
``attention.models.transformer`` with the default ``mha_translate`` config and
its input pipeline) three ways:

  mha         attention.MultiHeadAttention, implementation=None (the default:
              'chunked' self-attention on CPU; cross-attention asks for its
              weights, so it runs 'xla')
  mha-xla     attention.MultiHeadAttention, implementation='xla'
  flax        flax.linen.MultiHeadDotProductAttention in the same places
              (the model's attention class swapped for an adapter)

For each it reports tokens/s (real source + target tokens per second of wall
time, input pipeline included), ms per step, and the share of wall time spent
outside the compiled step: 1 - (device time of the loop's steps) / (wall time
of the loop), where the loop is the one of ``train_lib.train_and_evaluate``
(next batch, transfer, step, metrics fetched one step late, a log line every
``--log_every`` steps) and the device time of each step is that of the
compiled step run back-to-back on a batch of the same shape (the pipeline
buckets lengths: every bucket's step is compiled before timing starts).
Variants run in turns, medians over rounds.

flax.linen.MultiHeadDotProductAttention has no rotary position embeddings, so
when the config asks for them (the default, ``position='rope'``) every variant
runs with sinusoidal positions instead, the same model for all three.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top

from attention import masks as masks_lib  # pylint: disable=g-import-not-at-top
from attention.training import train_lib  # pylint: disable=g-import-not-at-top
from attention.models import transformer  # pylint: disable=g-import-not-at-top

VARIANTS = ('mha', 'mha-xla', 'flax')
TRAIN_STEP_HEADER = '## Train step (benchmarks/train_step.py)'


class FlaxAttention(nn.Module):
  """flax.linen.MultiHeadDotProductAttention behind MultiHeadAttention's call.

  Weights, when asked for, are zeros of the right shape: the train step's
  loss does not read them (XLA drops them), so this costs nothing there.
  """
  num_heads: int
  num_kv_heads: int | None = None
  dropout_rate: float = 0.0
  normalize_qk: bool = False
  rotary_base: float | None = None
  dtype: object = None
  implementation: str | None = None
  decode: bool = False

  @nn.compact
  def __call__(self, inputs_q, inputs_kv=None, *, mask=None, is_causal=False,
               deterministic=True, return_weights=False):
    if (self.num_kv_heads not in (None, self.num_heads) or self.decode or
        self.rotary_base is not None):
      raise ValueError('FlaxAttention: flax.linen.MultiHeadDotProductAttention'
                       ' has no grouped-query heads, prompt cache or rotary '
                       f'embeddings; got num_kv_heads={self.num_kv_heads}, '
                       f'decode={self.decode}, rotary_base={self.rotary_base}.')
    inputs_kv = inputs_q if inputs_kv is None else inputs_kv
    if is_causal:
      mask = masks_lib.combine_masks(mask, masks_lib.make_causal_mask(
          inputs_q.shape[1], inputs_kv.shape[1]))
    out = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.dropout_rate,
        normalize_qk=self.normalize_qk, dtype=self.dtype, name='attention')(
            inputs_q, inputs_kv, mask=mask, deterministic=deterministic)
    if not return_weights:
      return out
    B, T, S = inputs_q.shape[0], inputs_q.shape[1], inputs_kv.shape[1]
    return out, jax.numpy.zeros((B, self.num_heads, T, S), jax.numpy.float32)


@contextlib.contextmanager
def attention_layer(variant, config):
  """Sets the model's attention class and implementation for `variant`."""
  saved = transformer.MultiHeadAttention, config.model.get('implementation')
  if variant == 'flax':
    transformer.MultiHeadAttention = FlaxAttention
  config.model.implementation = 'xla' if variant == 'mha-xla' else None
  try:
    yield
  finally:
    transformer.MultiHeadAttention = saved[0]
    config.model.implementation = saved[1]


def load_config(path):
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


class Run:
  """One variant's trainer, state, input iterator and compiled step."""

  def __init__(self, variant, config, workdir, warmup):
    self.variant, self.config = variant, config
    self.pad_id = int(config.model.get('pad_id', 0))
    with self.layer():
      self.trainer = train_lib.Trainer(config, workdir)
      self.state = self.trainer.init_state()
      self.batches = self.trainer.task.train_batches()
      self.step = self.trainer.train_step
      # One batch of every bucket shape among the first `warmup` batches;
      # each shape's step is compiled here and timed in device_times().
      self.by_shape = {}
      for _ in range(warmup):
        batch = next(self.batches)
        self.by_shape.setdefault(self.shape(batch), self.to_device(batch))
      for batch in self.by_shape.values():
        self.state, metrics = self.step(self.state, batch,
                                        self.trainer.dropout_rng)
        jax.block_until_ready(metrics)

  def to_device(self, batch):
    return self.trainer.to_device(batch, self.trainer.task.train_keys)

  @staticmethod
  def shape(batch):
    return tuple(np.shape(batch[k]) for k in sorted(batch))

  def layer(self):
    # Batches of a new shape retrace the step: keep the layer swapped.
    return attention_layer(self.variant, self.config)

  def tokens(self, batch):
    src = np.asarray(batch['src'])
    return int((src != self.pad_id).sum() + np.asarray(batch['tgt_mask']).sum())

  def loop(self, steps, log_every):
    """The train loop of train_lib: (wall seconds, real tokens)."""
    with self.layer():
      return self._loop(steps, log_every)

  def _loop(self, steps, log_every):
    pending, tokens, lines, shapes = None, 0, [], []
    start = time.perf_counter()
    for step in range(1, steps + 1):
      host_batch = next(self.batches)
      tokens += self.tokens(host_batch)
      shapes.append(self.shape(host_batch))
      batch = self.to_device(host_batch)
      self.state, metrics = self.step(self.state, batch,
                                      self.trainer.dropout_rng)
      if pending is not None:
        fetched = jax.device_get(pending)
        loss = train_lib.mean(*fetched['loss'])
        if step % log_every == 0:
          lines.append(f'step {step} loss {loss:.4f}')
      pending = metrics
    jax.device_get(pending)
    return time.perf_counter() - start, tokens, shapes

  def device_times(self, reps):
    """Seconds per step of the compiled step alone, per batch shape."""
    times = {}
    with self.layer():
      for shape, batch in self.by_shape.items():
        start = time.perf_counter()
        for _ in range(reps):
          self.state, metrics = self.step(self.state, batch,
                                          self.trainer.dropout_rng)
        jax.block_until_ready((self.state, metrics))
        times[shape] = (time.perf_counter() - start) / reps
    return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config',
                      default=os.path.join(ROOT, 'configs', 'mha_translate.py'))
  parser.add_argument('--steps', type=int, default=30,
                      help='steps per timed loop')
  parser.add_argument('--warmup', type=int, default=100,
                      help='batches scanned for bucket shapes to compile')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--log_every', type=int, default=10)
  parser.add_argument('--out', default=os.path.join(ROOT, 'BENCHMARKS.md'),
                      help="the report whose train-step section to rewrite "
                           "('' to only print)")
  args = parser.parse_args()

  config = load_config(args.config)
  if config.model.get('position') == 'rope':
    print("note: flax.linen.MultiHeadDotProductAttention has no rotary "
          "embeddings; every variant runs with position='sinusoidal'.")
    config.model.position = 'sinusoidal'
  runs = {}
  with tempfile.TemporaryDirectory() as workdir:
    for variant in VARIANTS:
      runs[variant] = Run(variant, config, os.path.join(workdir, variant),
                          args.warmup)
    loops = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
      order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
      for variant in order:
        run = runs[variant]
        wall, tokens, shapes = run.loop(args.steps, args.log_every)
        per_shape = run.device_times(reps=3)
        if any(s not in per_shape for s in shapes):
          print(f'warning: {variant}: a batch shape unseen in warm-up was '
                'compiled inside the timed loop; raise --warmup')
        device = sum(per_shape.get(s, 0.0) for s in shapes)
        loops[variant].append((wall, tokens, device))

  m = config.model
  lines = [
      TRAIN_STEP_HEADER, '',
      f'Regenerated by `python benchmarks/train_step.py --steps {args.steps} '
      f'--rounds {args.rounds}` '
      f'({time.strftime("%Y-%m-%d %H:%M")}, load average '
      f'{os.getloadavg()[0]:.1f}): translate Transformer '
      f'({m.num_layers} layers, d_model {m.d_model}, {m.num_heads} heads, '
      f'{m.position} positions), '
      f'batch {config.batch_size}, {args.steps} steps x {args.rounds} rounds, '
      f'jax {jax.default_backend()}. "outside" = share of the loop\'s wall '
      'time not spent in the compiled step (input pipeline, transfer, metrics, '
      'logging; target < 5%).', '',
      '| attention | tokens/s | ms/step (loop) | ms/step (device) | '
      'outside the step |', '|---|---|---|---|---|']
  for variant in VARIANTS:
    wall, tokens, device = (float(np.median([x[i] for x in loops[variant]]))
                            for i in range(3))
    outside = max(0.0, 1.0 - device / wall)
    lines.append(f'| {variant} | {tokens / wall:,.0f} | '
                 f'{1e3 * wall / args.steps:.1f} | '
                 f'{1e3 * device / args.steps:.1f} | {100 * outside:.1f}% |')
  print('\n'.join(lines))
  if args.out:
    text = ''
    if os.path.exists(args.out):
      with open(args.out) as f:
        text = f.read()
      if TRAIN_STEP_HEADER in text:
        text = text[:text.index(TRAIN_STEP_HEADER)]
    with open(args.out, 'w') as f:
      f.write(text.rstrip('\n') + '\n\n' + '\n'.join(lines) + '\n')


if __name__ == '__main__':
  main()
