"""Character language model with an LSTM cell (`--model=lstm_lm`): nets.rnn_lm with an
LSTM cell."""

from __future__ import annotations

from nets import rnn_lm
from nets.rnn_lm import DATA, DEFAULTS, TASK, Config, check, generate  # noqa: F401

CELL = "lstm"


def build(config: Config, data_info) -> rnn_lm.RecurrentNetwork:
  return rnn_lm.build(config, data_info, cell=CELL)
