"""Generate text from a trained character language model; prints the prime and the sample.

python -m experiments.sample --workdir=DIR --prime="ROMEO:" --length=500 --temperature=0.8
"""

from absl import flags

from experiments.main import define_compilation_cache_flag, run_entry_point
from nets import models
from nets import trainer as trainer_lib
from nets.data import chars
from nets.errors import ConfigError

flags.DEFINE_string("workdir", None, "Workdir of a language-model run (--model=rnn_lm or "
                    "lstm_lm).")
flags.DEFINE_string("prime", "\n", "Text that starts the sample (sets the hidden state).")
flags.DEFINE_integer("length", 500, "Characters to generate after the prime.")
flags.DEFINE_float("temperature", 1.0, "Softmax temperature: lower is more conservative, "
                   "higher more varied.")
flags.DEFINE_integer("seed", 0, "Sampling seed: the same seed gives the same text.")
flags.DEFINE_string("checkpoint", "best", "Which checkpoint: best (on validation) or latest.")
define_compilation_cache_flag()
FLAGS = flags.FLAGS


def sample(workdir: str, prime: str, length: int, temperature: float, seed: int,
           checkpoint: str = "best") -> str:
  """The generated characters (without the prime)."""
  cfg, trainer, state, _ = trainer_lib.restore_for_eval(workdir, checkpoint)
  family = models.get(cfg.model)
  if not hasattr(family, "generate"):
    raise ConfigError(f"{workdir} holds a --model={cfg.model} run; sampling needs a "
                      "character language model (rnn_lm or lstm_lm)")
  vocab = chars.vocabulary(trainer.data)
  ids = family.generate(trainer.network, state.params, vocab.encode(prime), length,
                        temperature, seed)
  return vocab.decode(ids)


def main():
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required: the directory of a language-model run")
  if FLAGS.length < 1:
    raise ConfigError(f"--length={FLAGS.length}: must be >= 1")
  if not FLAGS.temperature > 0:
    raise ConfigError(f"--temperature={FLAGS.temperature}: must be > 0")
  if not FLAGS.prime:
    raise ConfigError("--prime must not be empty: sampling starts from its characters")
  if FLAGS.checkpoint not in ("best", "latest"):
    raise ConfigError(f"--checkpoint={FLAGS.checkpoint}: must be one of best, latest")
  print(FLAGS.prime + sample(FLAGS.workdir, FLAGS.prime, FLAGS.length, FLAGS.temperature,
                             FLAGS.seed, FLAGS.checkpoint))


if __name__ == "__main__":
  run_entry_point(main)
