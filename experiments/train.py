"""Train a model: python -m experiments.train --model=textcnn --dataset=sst2.

Thin by design: flags -> one Config -> nets.trainer.train_and_evaluate.
"""


from experiments import flags as flags_lib
from experiments.main import (define_compilation_cache_flag, define_distributed_flags,
                              initialize_distributed, log_environment, run_entry_point)
from nets import trainer

flags_lib.define_flags()
define_distributed_flags()
define_compilation_cache_flag()


def main():
  initialize_distributed()
  cfg = flags_lib.config_from_flags()
  log_environment()
  summary = trainer.train_and_evaluate(cfg)
  headline = {k: round(v, 4) for k, v in summary.items()
              if isinstance(v, float) and k.split("/")[0] in ("valid", "test", "refit")}
  print("summary:", headline)


if __name__ == "__main__":
  run_entry_point(main)
