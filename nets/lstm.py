"""Many-to-one LSTM sentence classifier (`--model=lstm`): nets.rnn with an LSTM cell."""

from __future__ import annotations

from nets import rnn
from nets.models import Network
from nets.rnn import DATA, DEFAULTS, TASK, TOKEN_TABLES, Config, check  # noqa: F401

CELL = "lstm"


def build(config: Config, data_info) -> Network:
  return rnn.build(config, data_info, cell=CELL)
