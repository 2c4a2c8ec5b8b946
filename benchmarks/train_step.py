"""Train-step throughput: steps per call against PyTorch, and attention layers.

  python benchmarks/train_step.py              # = --compare steps_per_call
  python benchmarks/train_step.py --compare loop
  python benchmarks/train_step.py --compare attention --steps 20

--compare steps_per_call (section "Steps per call" of BENCHMARKS.md): the
translate train step of configs/mha_translate.py (Transformer, AdamW,
gradient clipping, the config's label smoothing) run K steps per compiled
call (``Trainer.train_steps``, a ``lax.scan``; K=1 is ``Trainer.train_step``)
for K in --per_call, beside a PyTorch peer when torch is installed:
``torch.nn.Transformer`` at the same sizes (layers, width, heads, feed-forward
width, pre-LayerNorm, tied output embedding, sinusoidal positions), the same
optimizer settings (torch.optim.AdamW, clip_grad_norm_) and the same batches,
in eager mode. Every variant trains on the same 16 real batches of one shape
(the pipeline's most common one among the first batches), cycled; each call's
batches are stacked and sent as the loop does, and metrics are fetched one
call late. Variants run in turns, --rounds times; the table gives medians:
ms per step, real (non-padding) tokens per second, system CPU time and minor
page faults per step (getrusage), the first call's seconds (compilation), and
tokens/s over PyTorch's. The movie train step (configs/mha_movies.py) is
timed the same way, without a peer.

--compare loop: ``train_and_evaluate`` itself at the default config for
--loop_steps steps (an evaluation and a checkpoint at the end), as K=1, as
K=8 with the pipeline's batches in same-shape runs of 8 (config.data.
bucket_run, the default) and as K=8 with bucket_run=1 (batch shapes change
at random: calls end where the shape changes, and most steps run one per
call). It reports the whole run's wall time and the median
train/steps_per_second of its log lines after the first 100 steps.

--compare attention (section "Train step" of BENCHMARKS.md) runs the
project's training step
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
import copy
import importlib.util
import json
import math
import os
import resource
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top

from attention import masks as masks_lib  # pylint: disable=g-import-not-at-top
from attention.training import train_lib  # pylint: disable=g-import-not-at-top
from attention.models import transformer  # pylint: disable=g-import-not-at-top
from benchmarks import sections  # pylint: disable=g-import-not-at-top

VARIANTS = ('mha', 'mha-xla', 'flax')
TRAIN_STEP_HEADER = sections.TRAIN_STEP_HEADER
PER_CALL_HEADER = ('## Steps per call (benchmarks/train_step.py '
                   '--compare steps_per_call)')
LOOP_HEADER = ('## Steps per call in the loop (benchmarks/train_step.py '
               '--compare loop)')
POOL = 16  # batches of one shape every variant cycles through


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
  """The config of 'configs/<experiment>.py[:<arg>]'."""
  path, _, arg = path.partition(':')
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


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


def write_section(path: str, header: str, lines: list[str]) -> None:
  text = ''
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  with open(path, 'w') as f:
    f.write(sections.replace_section(text, header, lines))


# --- steps per call ---------------------------------------------------------


def usage():
  """(CPU seconds in the kernel, minor page faults) of this process so far."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_stime, r.ru_minflt


def one_shape_pool(batches, count=POOL, scan=400):
  """``count`` batches of the most common shape among the first ``scan``."""
  by_shape = {}
  for _ in range(scan):
    batch = next(batches)
    same = by_shape.setdefault(Run.shape(batch), [])
    same.append(batch)
    if len(same) == count:
      return same
  return max(by_shape.values(), key=len)[:count]


class JaxSteps:
  """The project's train step, ``per_call`` steps per compiled call."""

  def __init__(self, trainer, pool, per_call):
    self.trainer, self.pool, self.per_call = trainer, pool, per_call
    self.state = trainer.init_state()
    self.compile_s = None

  def call(self, i):
    """Call ``i``: its batches stacked and sent, the step(s) dispatched."""
    k = self.per_call
    host = [self.pool[(i * k + j) % len(self.pool)] for j in range(k)]
    self.state, metrics = self.trainer.run_call(self.state, host)
    return metrics

  def run(self, steps):
    """(wall seconds, steps run) of ``steps`` steps, metrics a call late."""
    if self.compile_s is None:
      start = time.perf_counter()
      jax.block_until_ready(self.call(0))
      self.compile_s = time.perf_counter() - start
    calls = max(1, steps // self.per_call)
    pending = None
    start = time.perf_counter()
    for i in range(calls):
      metrics = self.call(i)
      if pending is not None:
        fetched = jax.device_get(pending)
        float(np.sum(fetched['loss'][0]))  # as the loop reads it
      pending = metrics
    jax.device_get(pending)
    return time.perf_counter() - start, calls * self.per_call


class TorchSteps:
  """torch.nn.Transformer at the translate model's sizes, eager."""

  def __init__(self, config, trainer, pool):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(0)
    m, opt = config.model, config.optimizer
    task = trainer.task
    self.model = _torch_translate(torch, task.src_vocab.size,
                                  task.tgt_vocab.size, m)
    self.pad_id = int(m.get('pad_id', 0))
    self.optimizer = torch.optim.AdamW(
        self.model.parameters(), lr=float(opt.learning_rate),
        betas=(float(opt.b1), float(opt.b2)),
        weight_decay=float(opt.weight_decay))
    self.clip = float(opt.grad_clip)
    self.smoothing = float(config.get('label_smoothing', 0.0))
    self.pool = [{k: torch.from_numpy(np.asarray(b[k]).astype(np.int64))
                  for k in ('src', 'tgt_in', 'tgt_out', 'tgt_mask')}
                 for b in pool]
    self.compile_s = None

  def step(self, i):
    torch = self.torch
    b = self.pool[i % len(self.pool)]
    logits = self.model(b['src'], b['tgt_in'], self.pad_id)
    mask = b['tgt_mask'].bool()
    loss = torch.nn.functional.cross_entropy(
        logits[mask], b['tgt_out'][mask], label_smoothing=self.smoothing)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.optimizer.step()
    return loss

  def run(self, steps):
    if self.compile_s is None:
      start = time.perf_counter()
      self.step(0).item()
      self.compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
      self.step(i).item()
    return time.perf_counter() - start, steps

  def num_params(self):
    return sum(p.numel() for p in self.model.parameters())


def _torch_translate(torch, src_vocab, tgt_vocab, m):
  """An encoder-decoder torch.nn.Transformer with the project's shape."""
  d = int(m.d_model)

  class Translate(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.src_embed = torch.nn.Embedding(src_vocab, d)
      self.tgt_embed = torch.nn.Embedding(tgt_vocab, d)
      for e in (self.src_embed, self.tgt_embed):
        torch.nn.init.normal_(e.weight, std=d ** -0.5)
      warnings.filterwarnings('ignore', 'enable_nested_tensor')  # norm_first
      self.transformer = torch.nn.Transformer(
          d_model=d, nhead=int(m.num_heads),
          num_encoder_layers=int(m.num_layers),
          num_decoder_layers=int(m.num_layers),
          dim_feedforward=int(m.mlp_dim), dropout=float(m.dropout_rate),
          batch_first=True, norm_first=True)
      pos = np.arange(512)[:, None] / 10000 ** (np.arange(0, d, 2) / d)
      table = np.zeros((512, d), np.float32)
      table[:, 0::2], table[:, 1::2] = np.sin(pos), np.cos(pos)
      self.register_buffer('pos', torch.from_numpy(table))

    def forward(self, src, tgt_in, pad_id):
      s, t = src.shape[1], tgt_in.shape[1]
      causal = torch.ones(t, t, dtype=torch.bool).triu(1)  # True = masked
      src_pad, tgt_pad = src == pad_id, tgt_in == pad_id
      out = self.transformer(
          self.src_embed(src) + self.pos[:s], self.tgt_embed(tgt_in) +
          self.pos[:t], tgt_mask=causal, src_key_padding_mask=src_pad,
          tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
          tgt_is_causal=True)
      return out @ self.tgt_embed.weight.T  # tied output embedding

  return Translate()


def tokens_per_step(pool, task_name, pad_id=0):
  """Real tokens (source + target, or history positions) per step."""
  if task_name == 'translate':
    return float(np.mean([(np.asarray(b['src']) != pad_id).sum() +
                          np.asarray(b['tgt_mask']).sum() for b in pool]))
  return float(np.mean([np.asarray(b['mask']).sum() for b in pool]))


def time_variants(variants, steps, rounds):
  """{name: [(wall, steps, system s, minor faults)]} in alternating turns."""
  out = {name: [] for name in variants}
  names = list(variants)
  for name in names:  # compile / warm up outside the timed turns
    variants[name].run(min(steps, 16))
  for r in range(rounds):
    order = names if r % 2 == 0 else names[::-1]
    for name in order:
      sys0, faults0 = usage()
      wall, n = variants[name].run(steps)
      sys1, faults1 = usage()
      out[name].append((wall, n, sys1 - sys0, faults1 - faults0))
  return out


def per_call_rows(timings, tokens, compile_s, peer=None):
  rows = {}
  for name, runs in timings.items():
    ms = float(np.median([1e3 * w / n for w, n, _, _ in runs]))
    rows[name] = {
        'ms_per_step': ms, 'tokens_per_s': tokens / (ms / 1e3),
        'sys_ms_per_step': float(np.median([1e3 * sy / n
                                            for _, n, sy, _ in runs])),
        'faults_per_step': float(np.median([f / n for _, n, _, f in runs])),
        'first_call_s': compile_s[name]}
  if peer in rows:
    for row in rows.values():
      row['vs_peer'] = row['tokens_per_s'] / rows[peer]['tokens_per_s']
  return rows


def compare_steps_per_call(args):
  """The K axis (and the PyTorch peer) for translate; K=1 vs 8 for movies."""
  out = {}
  todo = [('translate', args.config), ('movies', args.movies_config)]
  for which, path in [(w, p) for w, p in todo if p]:
    config = load_config(path)
    per_call = args.per_call
    with tempfile.TemporaryDirectory() as workdir:
      trainer = train_lib.Trainer(config, workdir)
      pool = one_shape_pool(trainer.task.train_batches())
      variants = {f'K={k}': JaxSteps(trainer, pool, k) for k in per_call}
      peer = None
      if which == 'translate' and not args.no_torch:
        if importlib.util.find_spec('torch') is None:
          print('torch is not installed: no PyTorch peer.')
        else:
          # The peer's architecture in ours: sinusoidal positions, no
          # QK-norm, at the config's default steps per call.
          same = copy.deepcopy(config)
          same.model.position, same.model.normalize_qk = 'sinusoidal', False
          k = int(config.steps_per_call)
          variants[f'K={k}, the peer\'s architecture'] = JaxSteps(
              train_lib.Trainer(same, os.path.join(workdir, 'same')), pool,
              k)
          variants['torch eager'] = peer_steps = TorchSteps(config, trainer,
                                                            pool)
          peer = 'torch eager'
      steps = args.per_call_steps - args.per_call_steps % max(per_call)
      timings = time_variants(variants, steps, args.rounds)
      tokens = tokens_per_step(pool, which)
      compile_s = {n: v.compile_s for n, v in variants.items()}
      rows = per_call_rows(timings, tokens, compile_s, peer)
      shape = {k: list(np.shape(v)) for k, v in sorted(pool[0].items())
               if k in trainer.task.train_keys}
      params = sum(x.size for x in jax.tree.leaves(
          variants[f'K={per_call[0]}'].state['params']))
      out[which] = {'rows': rows, 'shape': shape, 'tokens_per_step': tokens,
                    'steps': steps, 'params': int(params),
                    'peer_params': (int(peer_steps.num_params())
                                    if peer else None)}
      for name, row in rows.items():
        print(f'{which} {name}: {row["ms_per_step"]:.1f} ms/step, '
              f'{row["tokens_per_s"]:,.0f} tokens/s, '
              f'{row["sys_ms_per_step"]:.1f} ms system, '
              f'{row["faults_per_step"]:,.0f} faults/step')
  return out


def per_call_report(result, args):
  tr, mv = result['translate'], result.get('movies')
  src, tgt = tr['shape']['src'], tr['shape']['tgt_in']
  lines = [
      PER_CALL_HEADER, '',
      f'Regenerated by `python benchmarks/train_step.py --compare '
      f'steps_per_call --rounds {args.rounds}` '
      f'({time.strftime("%Y-%m-%d %H:%M")}, load average '
      f'{os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, jax '
      f'{jax.__version__} on {jax.default_backend()}). Translate: '
      f'configs/mha_translate.py\'s Transformer ({tr["params"]:,} parameters'
      + (f'; the PyTorch peer {tr["peer_params"]:,}' if tr['peer_params']
         else '') +
      f'), batch {src[0]}, source {src[1]} and target {tgt[1]} tokens '
      f'({tr["tokens_per_step"]:.0f} real tokens per step), '
      f'{tr["steps"]} steps per turn, medians of {args.rounds} turns. '
      'The config\'s model has rotary positions and QK-LayerNorm, the peer '
      'sinusoidal positions and none: "the peer\'s architecture" is ours '
      'with those two changed. "first call" is the first call\'s seconds '
      '(compilation included). Target: the default K at >= 1.1x PyTorch '
      'eager.', '',
      '| translate | ms/step | tokens/s | vs torch eager | system ms/step '
      '| minor faults/step | first call (s) |',
      '|---|---|---|---|---|---|---|']
  for name, row in tr['rows'].items():
    vs = f'{row["vs_peer"]:.2f}x' if 'vs_peer' in row else '-'
    lines.append(
        f'| {name} | {row["ms_per_step"]:.1f} | {row["tokens_per_s"]:,.0f} | '
        f'{vs} | {row["sys_ms_per_step"]:.1f} | '
        f'{row["faults_per_step"]:,.0f} | {row["first_call_s"]:.1f} |')
  if mv is None:
    return lines
  inputs = mv['shape']['inputs']
  lines += [
      '', f'Movies: configs/mha_movies.py\'s SASRec ({mv["params"]:,} '
      f'parameters), batch {inputs[0]}, history {inputs[1]}.', '',
      '| movies | ms/step | steps/s | system ms/step | minor faults/step | '
      'first call (s) |', '|---|---|---|---|---|---|']
  for name, row in mv['rows'].items():
    lines.append(
        f'| {name} | {row["ms_per_step"]:.1f} | '
        f'{1e3 / row["ms_per_step"]:.1f} | {row["sys_ms_per_step"]:.1f} | '
        f'{row["faults_per_step"]:,.0f} | {row["first_call_s"]:.1f} |')
  return lines


# --- the loop ---------------------------------------------------------------


LOOP_VARIANTS = (('K=1', 1, 8), ('K=8, bucket_run=8', 8, 8),
                 ('K=8, bucket_run=1', 8, 1))


def compare_loop(args):
  """train_and_evaluate as K=1 and K=8, batches in runs or not."""
  out = {}
  for name, per_call, run in LOOP_VARIANTS:
    config = load_config(args.config)
    config.num_train_steps = args.loop_steps
    config.eval_every_steps = config.checkpoint_every_steps = args.loop_steps
    config.log_every_steps = 50
    config.steps_per_call, config.data.bucket_run = per_call, run
    with tempfile.TemporaryDirectory() as workdir:
      start = time.perf_counter()
      train_lib.train_and_evaluate(copy.deepcopy(config), workdir)
      wall = time.perf_counter() - start
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    rates = [r['train/steps_per_second'] for r in rows
             if 'train/steps_per_second' in r and r['step'] > 100]
    out[name] = {'wall_s': wall, 'steps_per_s': float(np.median(rates))
                 if rates else math.nan}
    print(f'loop {name}: {wall:.1f} s, {out[name]["steps_per_s"]:.2f} '
          'steps/s')
  return out


def loop_report(result, args):
  base = result['K=1']['steps_per_s']
  lines = [
      LOOP_HEADER, '',
      f'Regenerated by `python benchmarks/train_step.py --compare loop '
      f'--loop_steps {args.loop_steps}` ({time.strftime("%Y-%m-%d %H:%M")}, '
      f'load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs): '
      f'train.py\'s loop at configs/mha_translate.py for {args.loop_steps} '
      'steps (8 length buckets), an evaluation and a checkpoint at the end. '
      '"steps/s" is the median of the log lines after step 100.', '',
      '| run | wall (s) | steps/s | vs K=1 |', '|---|---|---|---|']
  for name, row in result.items():
    lines.append(f'| {name} | {row["wall_s"]:.0f} | '
                 f'{row["steps_per_s"]:.2f} | '
                 f'{row["steps_per_s"] / base:.2f}x |')
  return lines


# --- attention layers -------------------------------------------------------


def compare_attention(args):
  """The attention-layer table (section "Train step")."""
  config = load_config(args.config)
  config.steps_per_call = 1  # Run times train_step, one step a call
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
      f'Regenerated by `python benchmarks/train_step.py --compare attention '
      f'--steps {args.steps} --rounds {args.rounds}` '
      f'({time.strftime("%Y-%m-%d %H:%M")}, load average '
      f'{os.getloadavg()[0]:.1f}): translate Transformer '
      f'({m.num_layers} layers, d_model {m.d_model}, {m.num_heads} heads, '
      f'{m.position} positions), '
      f'batch {config.batch_size}, {args.steps} steps x {args.rounds} rounds, '
      f'one step per call, jax {jax.default_backend()}. "outside" = share of '
      'the loop\'s wall time not spent in the compiled step (input pipeline, '
      'transfer, metrics, logging; target < 5%).', '',
      '| attention | tokens/s | ms/step (loop) | ms/step (device) | '
      'outside the step |', '|---|---|---|---|---|']
  for variant in VARIANTS:
    wall, tokens, device = (float(np.median([x[i] for x in loops[variant]]))
                            for i in range(3))
    outside = max(0.0, 1.0 - device / wall)
    lines.append(f'| {variant} | {tokens / wall:,.0f} | '
                 f'{1e3 * wall / args.steps:.1f} | '
                 f'{1e3 * device / args.steps:.1f} | {100 * outside:.1f}% |')
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--compare', default='steps_per_call',
                      choices=('steps_per_call', 'loop', 'attention', 'all'))
  parser.add_argument('--config',
                      default=os.path.join(ROOT, 'configs', 'mha_translate.py'))
  parser.add_argument('--movies_config',
                      default=os.path.join(ROOT, 'configs', 'mha_movies.py'),
                      help="the movie config ('' to leave the movies out)")
  parser.add_argument('--per_call', type=int, nargs='+',
                      default=[1, 2, 4, 8, 16],
                      help='steps per call to time (steps_per_call)')
  parser.add_argument('--per_call_steps', type=int, default=64,
                      help='steps per timed turn (steps_per_call)')
  parser.add_argument('--no_torch', action='store_true',
                      help='leave the PyTorch peer out')
  parser.add_argument('--loop_steps', type=int, default=400,
                      help='steps of each train_and_evaluate run (loop)')
  parser.add_argument('--steps', type=int, default=30,
                      help='steps per timed loop (attention)')
  parser.add_argument('--warmup', type=int, default=100,
                      help='batches scanned for bucket shapes to compile '
                           '(attention)')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--log_every', type=int, default=10)
  parser.add_argument('--json', default='',
                      help='also write the measurements here')
  parser.add_argument('--out', default=os.path.join(ROOT, 'BENCHMARKS.md'),
                      help="the report whose sections to rewrite ('' to only "
                           "print)")
  args = parser.parse_args(argv)
  todo = (('steps_per_call', 'loop', 'attention') if args.compare == 'all'
          else (args.compare,))
  results = {}
  for what in todo:
    if what == 'steps_per_call':
      results[what] = compare_steps_per_call(args)
      header, lines = PER_CALL_HEADER, per_call_report(results[what], args)
    elif what == 'loop':
      results[what] = compare_loop(args)
      header, lines = LOOP_HEADER, loop_report(results[what], args)
    else:
      header, lines = TRAIN_STEP_HEADER, compare_attention(args)
    print('\n'.join(lines))
    if args.out:
      write_section(args.out, header, lines)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
