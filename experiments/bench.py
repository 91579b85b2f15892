"""Benchmark the training step (or decoder) of each model family at the shapes of
shared/BENCHMARKS.md.

python -m experiments.bench --case=textcnn [--steps=30] [--warmup=5]
python -m experiments.bench --case=all

Each case builds its model through nets/ and times the same jitted train step the
trainer runs (nets.trainer.Trainer.train_step), blocking on the result, on random data
drawn once. Prints exactly one JSON line per case.
"""

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np
from absl import flags

from experiments.main import run_entry_point
from nets.errors import ConfigError

CASES = ("textcnn", "convnet", "rnn_lm", "lstm_lm", "seq2seq", "seq2seq_decode")
flags.DEFINE_string("case", "textcnn", f"Benchmark case: one of {', '.join(CASES)}, or all.")
flags.DEFINE_integer("steps", 30, "Timed steps (the median is reported).")
flags.DEFINE_integer("warmup", 5, "Untimed steps first; the first one (compilation "
                     "included) is reported as first_step_s.")
flags.DEFINE_integer("seed", 0, "Seed of the random data and parameters.")
flags.DEFINE_integer(
    "loop_steps", 0, "Also run the training loop itself (nets.trainer.run: batch "
    "iterator, prefetch, metric fetches every 50 steps, progress bar, TensorBoard) for "
    "this many steps on the case's data and report its median throughput beside the "
    "step's (0: skip; training cases only; >= 200 gives training's own log windows).")
flags.DEFINE_integer(
    "steps_per_dispatch", 1, "Training steps per call in the --loop_steps loop (the "
    "trainer's flag of that name); the step itself is timed one per call.")
FLAGS = flags.FLAGS
# Rows of random data per case, in batches: the loop (--loop_steps) cycles through them.
DATA_BATCHES = 8


def textcnn_case(rng):
  """Kim's CNN: batch 50 x 56 tokens, vocab 20000, 300-d, widths 3/4/5 x 100, Adadelta."""
  from nets import textcnn
  from nets.config import Config
  from nets.data.datasets import Data
  from nets.data.text import Vocab
  B, L, V = 50, 56, 20000
  N = DATA_BATCHES * B
  train = {"tokens": rng.integers(1, V, (N, L)).astype(np.int32),
           "length": np.full((N,), L, np.int32),
           "label": rng.integers(0, 2, (N,)).astype(np.int32)}
  vocab = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(V - 2)])
  data = Data(train=train, valid=None, test=None, num_classes=2, num_outputs=2,
              vocab=vocab, max_len=L)
  batch = {k: v[:B] for k, v in train.items()}
  cfg = Config(model="textcnn", batch_size=B, optimizer="adadelta", learning_rate=1.0,
               max_norm=0.0, model_config=textcnn.Config(embed_dim=300, dropout=0.5))
  return cfg, data, batch, B, "examples/s"


def convnet_case(rng):
  """The lectures' LeNet: batch 128 of 1x32x32 images, SGD momentum 0.9, lr 0.01."""
  from nets import convnet
  from nets.config import Config
  from nets.data import images
  B = 128
  raw = images.ImageSplits(
      train={"image": rng.integers(0, 256, (DATA_BATCHES * B, 32, 32, 1)).astype(np.uint8),
             "label": rng.integers(0, 10, (DATA_BATCHES * B,)).astype(np.int32)},
      valid=None, test=None, num_classes=10)
  cfg = Config(model="convnet", dataset="bench", batch_size=B, optimizer="momentum",
               learning_rate=0.01, momentum=0.9, max_norm=0.0,
               model_config=convnet.Config(input_padding=0))
  data = images.prepare(raw, cfg)
  batch = {k: v[:B] for k, v in data.train.items()}
  return cfg, data, batch, B, "examples/s"


def _char_lm_case(model: str, num_layers: int):
  def case(rng):
    """Char LM: batch 32 x BPTT 128, vocab 65, embedding 64, hidden 256, Adam 2e-3,
    clip 5."""
    import importlib
    from nets.config import Config
    from nets.data import chars
    family = importlib.import_module(f"nets.{model}")
    B, T = 32, 128
    alphabet = np.array([chr(c) for c in range(48, 48 + 64)])  # 64 chars + <unk> = 65
    text = "".join(rng.choice(alphabet, B * T * DATA_BATCHES + 1))
    cfg = Config(model=model, dataset="bench", batch_size=B, optimizer="adam",
                 learning_rate=2e-3, grad_clip=5.0, max_norm=0.0,
                 model_config=family.Config(embed_dim=64, hidden_size=256,
                                            num_layers=num_layers, bptt=T, dropout=0.0))
    data = chars.prepare(chars.TextSplits(text, None, None, name="bench"), cfg)
    batch = {k: v[:B] for k, v in data.train.items()}
    return cfg, data, batch, B * T, "tokens/s"
  return case


def _seq2seq_case(decode: bool):
  def case(rng):
    """RNNsearch: bi-GRU encoder 512/direction, GRU decoder 512 fed [embedding; context],
    additive attention 512 queried with the previous state, dense 512 -> 8000; batch 64,
    30 -> 30 tokens, vocab 8000 each side, embedding 256; Adam 1e-3, clip 1. Decode:
    encoder + exactly 30 greedy steps, no optimizer."""
    from nets import seq2seq
    from nets.config import Config
    from nets.data.datasets import Data
    B, S, T, V = 64, 30, 30, 8000
    N = DATA_BATCHES * B
    ids = lambda length: rng.integers(4, V, (N, length)).astype(np.int32)  # no specials
    train = {"tokens": np.stack([ids(S), ids(T)], axis=-1),
             "src_length": np.full((N,), S, np.int32), "tgt_length": np.full((N,), T, np.int32),
             "length": np.full((N,), max(S, T), np.int32)}
    data = Data(train=train, valid=None, test=None, num_outputs=V, max_len=max(S, T),
                info={"src_vocab_size": V, "tgt_vocab_size": V})
    batch = {k: v[:B] for k, v in train.items()}
    cfg = Config(model="seq2seq", dataset="bench", batch_size=B, optimizer="adam",
                 learning_rate=1e-3, grad_clip=1.0, max_norm=0.0, bucket_by_length=False,
                 model_config=seq2seq.Config(cell="gru", embed_dim=256, hidden_size=512,
                                             decoder_size=512, attention="additive",
                                             attention_size=512, deep_output=False,
                                             num_layers=1, dropout=0.0))
    if not decode:
      return cfg, data, batch, B * T, "target tokens/s"
    # Times fn(params, batch) instead of the train step.
    decoder = lambda trainer: lambda params, batch: seq2seq.greedy_decode(
        trainer.network, params, batch["tokens"][..., 0], batch["src_length"], T)
    return cfg, data, batch, B, "sentences/s", decoder
  return case


CASE_BUILDERS = {"textcnn": textcnn_case, "convnet": convnet_case,
                 "rnn_lm": _char_lm_case("rnn_lm", 1),
                 "lstm_lm": _char_lm_case("lstm_lm", 2),
                 "seq2seq": _seq2seq_case(decode=False),
                 "seq2seq_decode": _seq2seq_case(decode=True)}


def loop_throughput(cfg, data, items: int, steps: int, steps_per_dispatch: int = 1) -> float:
  """Median items/s of the training loop (nets.trainer.run) over `steps` steps.

  The loop logs examples/s per log window, excluding evaluation and checkpoint time; the
  first window (compilation) is dropped. Windows are training's own --log_every (each one
  ends in a metrics fetch, a sync), shortened only to fit 4 of them into `steps`, and
  rounded down to a multiple of `steps_per_dispatch`.
  """
  from nets import trainer as trainer_lib
  k = steps_per_dispatch
  log_every = max(min(cfg.log_every, steps // 4) // k * k, k)
  cfg = dataclasses.replace(cfg, num_epochs=steps, max_steps=steps, log_every=log_every,
                            eval_every=steps, checkpoint_every=steps, keep_checkpoints=1,
                            steps_per_dispatch=k)
  with tempfile.TemporaryDirectory() as workdir:
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the one JSON line
      trainer_lib.run(cfg, data, workdir, desc="loop")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rates = [m["train/examples_per_s"] for m in map(json.loads, f)
               if "train/examples_per_s" in m]
  if len(rates) < 2:
    raise ConfigError(f"--loop_steps={steps}: too few to time (use >= 20)")
  return float(np.median(rates[1:])) * items / cfg.batch_size


def bench(case: str, steps: int, warmup: int, seed: int, loop_steps: int = 0,
          steps_per_dispatch: int = 1) -> dict:
  from nets.trainer import Trainer
  if case not in CASE_BUILDERS:
    raise ConfigError(f"--case={case}: not implemented yet (available: "
                      f"{', '.join(CASE_BUILDERS)})")
  # A case may add a decoder: trainer -> fn(params, batch), timed instead of the step.
  cfg, data, batch, items, unit, *decoder = CASE_BUILDERS[case](np.random.default_rng(seed))
  trainer = Trainer(cfg, data)
  state = trainer.initial_state()
  batch = trainer.put(batch)
  step = trainer.train_step
  if decoder:
    fn = jax.jit(decoder[0](trainer))
    step = lambda state, batch: (state, fn(state.params, batch))
  t0 = time.perf_counter()
  state, out = step(state, batch)
  jax.block_until_ready((state, out))
  first = time.perf_counter() - t0
  for _ in range(warmup - 1):
    state, out = step(state, batch)
  jax.block_until_ready((state, out))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, out = step(state, batch)
    jax.block_until_ready((state, out))
    times.append(time.perf_counter() - t0)
  median = float(np.median(times))
  result = {"framework": "jax", "case": case, "unit": unit,
            "throughput_median": items / median, "step_ms_median": median * 1e3,
            "first_step_s": first, "steps": steps, "warmup": warmup,
            "backend": jax.default_backend(), "devices": jax.device_count(),
            "jax": jax.__version__}
  if loop_steps and not decoder:
    del state, out  # the loop builds its own state: free this one's buffers first
    loop = loop_throughput(cfg, data, items, loop_steps, steps_per_dispatch)
    result.update(loop_throughput_median=loop, loop_over_step=loop * median / items,
                  steps_per_dispatch=steps_per_dispatch)
  return result


def main():
  if FLAGS.case != "all" and FLAGS.case not in CASES:
    raise ConfigError(f"--case={FLAGS.case}: must be one of {', '.join(CASES)}, all")
  if FLAGS.steps < 1 or FLAGS.warmup < 1:
    raise ConfigError("--steps and --warmup must be >= 1")
  if FLAGS.steps_per_dispatch < 1:
    raise ConfigError(f"--steps_per_dispatch={FLAGS.steps_per_dispatch}: must be >= 1")
  if FLAGS.loop_steps and FLAGS.loop_steps < 20:
    raise ConfigError(f"--loop_steps={FLAGS.loop_steps}: use 0 (skip) or >= 20 (the loop "
                      "is timed over log windows, the first one dropped)")
  if FLAGS.loop_steps and FLAGS.loop_steps < 4 * FLAGS.steps_per_dispatch:
    raise ConfigError(f"--loop_steps={FLAGS.loop_steps}: use at least 4 dispatches "
                      f"(4 x --steps_per_dispatch={FLAGS.steps_per_dispatch})")
  cases = [c for c in CASES if c in CASE_BUILDERS] if FLAGS.case == "all" else [FLAGS.case]
  for case in cases:
    print(json.dumps(bench(case, FLAGS.steps, FLAGS.warmup, FLAGS.seed, FLAGS.loop_steps,
                           FLAGS.steps_per_dispatch)), flush=True)


if __name__ == "__main__":
  run_entry_point(main)
