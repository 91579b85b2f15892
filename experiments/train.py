"""Train a model: python -m experiments.train --model=textcnn --dataset=sst2.

Thin by design: flags -> one Config -> nets.trainer.train_and_evaluate.
"""

from absl import app

from experiments import flags as flags_lib
from experiments.main import (define_distributed_flags, hide_gpus_from_tensorflow,
                              initialize_distributed, log_environment, parse_flags,
                              quiet_logging, run_main)
from nets import trainer

flags_lib.define_flags()
define_distributed_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  hide_gpus_from_tensorflow()
  quiet_logging()

  def work():
    initialize_distributed()
    cfg = flags_lib.config_from_flags()
    log_environment()
    summary = trainer.train_and_evaluate(cfg)
    headline = {k: round(v, 4) for k, v in summary.items()
                if isinstance(v, float) and k.split("/")[0] in ("valid", "test")}
    print("summary:", headline)

  run_main(work)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
