"""Translate with a trained seq2seq run: one output line per input line.

python -m experiments.translate --workdir=DIR < source.txt
python -m experiments.translate --workdir=DIR --src_file=A --beam_size=5 > out.txt
python -m experiments.translate --workdir=DIR --attention_png=att.png <<< "ein mann ."

--attention_png writes the attention heat map of the first input sentence.
"""

import sys

from absl import flags

from experiments.main import define_compilation_cache_flag, run_entry_point
from nets import models
from nets import trainer as trainer_lib
from nets import translate
from nets.data import translation
from nets.errors import ConfigError

flags.DEFINE_string("workdir", None, "Workdir of a seq2seq training run.")
flags.DEFINE_string("src_file", "", "Source sentences, one per line (plain or .gz; "
                    "default: standard input).")
flags.DEFINE_integer("beam_size", 1, "Beam width (1: greedy decoding).")
flags.DEFINE_float("length_penalty", 1.0, "Beam search ranks log p(y) / |y|^this "
                   "(0: the plain sum, which favours short outputs).")
flags.DEFINE_integer("max_decode_len", 0, "Decoding steps (0: the run's padded training "
                     "length).")
flags.DEFINE_integer("batch_size", 64, "Sentences decoded at once.")
flags.DEFINE_string("attention_png", "", "Also write the attention heat map of the first "
                    "sentence to this PNG.")
flags.DEFINE_string("checkpoint", "best", "Which checkpoint: best (on validation) or latest.")
define_compilation_cache_flag()
FLAGS = flags.FLAGS


def main():
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required: the directory of a seq2seq run")
  if FLAGS.checkpoint not in ("best", "latest"):
    raise ConfigError(f"--checkpoint={FLAGS.checkpoint}: must be one of best, latest")
  cfg, trainer, state, _ = trainer_lib.restore_for_eval(FLAGS.workdir, FLAGS.checkpoint)
  if models.get(cfg.model).DATA != "translation":
    raise ConfigError(f"{FLAGS.workdir} holds a --model={cfg.model} run; translation "
                      "needs a seq2seq run")
  texts = (translation.read_lines(FLAGS.src_file, "--src_file") if FLAGS.src_file
           else sys.stdin.read().split("\n"))
  if not FLAGS.src_file and texts and texts[-1] == "":
    texts.pop()
  if not texts:
    raise ConfigError("no source sentences: pass --src_file or lines on standard input")
  outputs = translate.translate(
      trainer.network, state.params, trainer.data, texts, beam_size=FLAGS.beam_size,
      length_penalty=FLAGS.length_penalty, batch_size=FLAGS.batch_size,
      max_decode_len=FLAGS.max_decode_len)
  for out in outputs:
    print(out.text)
  if FLAGS.attention_png:
    translate.plot_attention(outputs[0], FLAGS.attention_png)
    print(f"attention heat map: {FLAGS.attention_png}", file=sys.stderr)


if __name__ == "__main__":
  run_entry_point(main)
