"""Evaluate a trained workdir on a label-first file; prints one JSON line.

python -m experiments.evaluate --workdir=DIR --test_file=PATH [--checkpoint=best|latest]
python -m experiments.evaluate --workdir=DIR --test_src_file=A --test_tgt_file=B  (seq2seq:
    BLEU and perplexity; --beam_size)
"""

import json

from absl import flags
import numpy as np

from experiments.main import define_compilation_cache_flag, run_entry_point
from nets import parallel
from nets import trainer as trainer_lib
from nets.data import datasets
from nets.errors import ConfigError

flags.DEFINE_string("workdir", None, "Workdir of a training run (holds config.json, "
                    "vocab.txt and checkpoints).")
flags.DEFINE_string("test_file", None, "File to evaluate on, in the run's data format (for "
                    "sentence classifiers: '<label> <sentence>' per line; for language "
                    "models: any text).")
flags.DEFINE_string("checkpoint", "best", "Which checkpoint: best (on validation) or latest.")
flags.DEFINE_integer("batch_size", 0, "Evaluation batch size (0: the run's).")
flags.DEFINE_string("output", "", "Also append the JSON line to this file.")
flags.DEFINE_string("test_src_file", None, "Translation runs: source sentences, one per line.")
flags.DEFINE_string("test_tgt_file", None, "Translation runs: reference translations.")
flags.DEFINE_integer("beam_size", 1, "Translation runs: beam width for BLEU (1: greedy).")
flags.DEFINE_float("length_penalty", 1.0, "Translation runs: beam search ranks "
                   "log p(y) / |y|^this.")
define_compilation_cache_flag()
FLAGS = flags.FLAGS


def main():
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required: the directory of a training run")
  if not FLAGS.test_file and not FLAGS.test_src_file:
    raise ConfigError("--test_file is required: a label-first file to evaluate on "
                      "(translation runs: --test_src_file and --test_tgt_file)")
  if FLAGS.checkpoint not in ("best", "latest"):
    raise ConfigError(f"--checkpoint={FLAGS.checkpoint}: must be one of best, latest")
  if FLAGS.batch_size < 0:
    raise ConfigError(f"--batch_size={FLAGS.batch_size}: must be >= 0")
  cfg, trainer, state, used = trainer_lib.restore_for_eval(FLAGS.workdir, FLAGS.checkpoint)
  step = int(np.max(state.step))  # [R] equal steps for a run of replicas (--vmap_seeds)
  kind = datasets.kind(cfg)
  batch_size = FLAGS.batch_size or cfg.batch_size
  if hasattr(kind, "evaluate_files"):  # translation: BLEU and perplexity on parallel files
    parallel.check_batch_size(batch_size, trainer.mesh)
    metrics = kind.evaluate_files(trainer, state.params, FLAGS.test_src_file,
                                  FLAGS.test_tgt_file, batch_size=batch_size,
                                  beam_size=FLAGS.beam_size,
                                  length_penalty=FLAGS.length_penalty)
    _report({"workdir": FLAGS.workdir, "checkpoint": used,
             "step": step, "test_src_file": FLAGS.test_src_file,
             "test_tgt_file": FLAGS.test_tgt_file, **metrics})
    return
  # The run's data kind reads the file the way it read its training data.
  arrays = kind.encode_file(FLAGS.test_file, trainer.data)
  if not trainer.data.shuffle and batch_size != cfg.batch_size:
    raise ConfigError(f"--batch_size={batch_size}: a {cfg.model} run carries its state "
                      f"across batches and evaluates with its own {cfg.batch_size}")
  parallel.check_batch_size(batch_size, trainer.mesh)
  metrics = trainer.evaluate(state.params, arrays, batch_size)
  result = {"workdir": FLAGS.workdir, "checkpoint": used,
            "step": step, "test_file": FLAGS.test_file,
            "examples": int(len(next(iter(arrays.values())))),
            **trainer_lib.scalars(metrics)}
  _report(result)


def _report(result: dict) -> None:
  line = json.dumps(result)
  print(line)
  if FLAGS.output:
    with open(FLAGS.output, "a") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  run_entry_point(main)
