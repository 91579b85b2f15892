"""Evaluate a trained workdir on a label-first file; prints one JSON line.

python -m experiments.evaluate --workdir=DIR --test_file=PATH [--checkpoint=best|latest]
"""

import json
import os

from absl import app, flags

from experiments.main import hide_gpus_from_tensorflow, parse_flags, quiet_logging, run_main
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
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  hide_gpus_from_tensorflow()
  quiet_logging()

  def work():
    if not FLAGS.workdir:
      raise ConfigError("--workdir is required: the directory of a training run")
    if not FLAGS.test_file:
      raise ConfigError("--test_file is required: a label-first file to evaluate on")
    if FLAGS.checkpoint not in ("best", "latest"):
      raise ConfigError(f"--checkpoint={FLAGS.checkpoint}: must be one of best, latest")
    if FLAGS.batch_size < 0:
      raise ConfigError(f"--batch_size={FLAGS.batch_size}: must be >= 0")
    cfg, trainer, state = trainer_lib.restore_for_eval(FLAGS.workdir, FLAGS.checkpoint)
    # The run's data kind reads the file the way it read its training data.
    arrays = datasets.kind(cfg).encode_file(FLAGS.test_file, trainer.data)
    batch_size = FLAGS.batch_size or cfg.batch_size
    if not trainer.data.shuffle and batch_size != cfg.batch_size:
      raise ConfigError(f"--batch_size={batch_size}: a {cfg.model} run carries its state "
                        f"across batches and evaluates with its own {cfg.batch_size}")
    parallel.check_batch_size(batch_size, trainer.mesh)
    metrics = trainer.evaluate(state.params, arrays, batch_size)
    result = {"workdir": FLAGS.workdir, "checkpoint": FLAGS.checkpoint,
              "step": int(state.step), "test_file": FLAGS.test_file,
              "examples": int(len(next(iter(arrays.values())))), **metrics}
    line = json.dumps(result)
    print(line)
    if FLAGS.output:
      with open(FLAGS.output, "a") as f:
        f.write(line + "\n")

  run_main(work)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
