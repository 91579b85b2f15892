"""Name -> model-family module registry that serves --model.

A family module provides:
  Config      frozen dataclass of the family's hyperparameters (fields become flags);
  DEFAULTS    run-option defaults for this family (e.g. its paper's optimizer),
              used where the user did not set the flag;
  TASK        what the trainer optimises ("classification", ...);
  DATA        which data layer feeds it ("text", ...);
  build(model_config, data_info) -> Network   (pure init/apply functions).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from nets.errors import ConfigError

FAMILIES = {
    "textcnn": "nets.textcnn",
    "rnn": "nets.rnn",
    "lstm": "nets.lstm",
    "rnn_lm": "nets.rnn_lm",
    "lstm_lm": "nets.lstm_lm",
    "convnet": "nets.convnet",
    "seq2seq": "nets.seq2seq",
}


@dataclasses.dataclass(frozen=True)
class Network:
  """A model as two pure functions; the trainer only ever sees pytrees.

  init(rng) -> params
  apply(params, batch, *, train, rng) -> outputs (logits for classifiers)
  """

  init: Callable[[Any], Any]
  apply: Callable[..., Any]


def get(name: str):
  if name not in FAMILIES:
    raise ConfigError(f"--model={name}: must be one of {', '.join(FAMILIES)}")
  return importlib.import_module(FAMILIES[name])
