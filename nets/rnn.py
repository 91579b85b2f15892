"""Many-to-one recurrent sentence classifier, Elman cell (`--model=rnn`; `--model=lstm` in
nets.lstm is the same network with an LSTM cell).

Embeddings (the text CNN's options: rand / static / non-static / multichannel, looked up
outside the network so row-sparse updates work) -> a stack of recurrent layers
(optionally bidirectional) run with lax.scan over each sentence's valid tokens -> the
final state, or max / mean pooling over the states -> dropout -> dense output.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from nets import recurrent, textcnn
from nets.config import option
from nets.models import Network

TASK = "classification"
DATA = "text"
TOKEN_TABLES = textcnn.TOKEN_TABLES
CELL = "elman"
STATE_POOLING = ("final", "max", "mean")

# Adam with clipping is the usual recipe for recurrent classifiers (Kim's Adadelta setup
# is for the CNN).
DEFAULTS = dict(optimizer="adam", learning_rate=1e-3, batch_size=50, num_epochs=10,
                grad_clip=5.0)


def same_option(config_cls, name: str):
  """A field identical to `config_cls`'s: one shared flag needs one type, default and help."""
  f = config_cls.__dataclass_fields__[name]
  if f.default_factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=f.default_factory, metadata=f.metadata)
  return dataclasses.field(default=f.default, metadata=f.metadata)


@dataclasses.dataclass(frozen=True)
class Config:
  embed_dim: int = same_option(textcnn.Config, "embed_dim")
  embedding_mode: str = same_option(textcnn.Config, "embedding_mode")
  embeddings: str = same_option(textcnn.Config, "embeddings")
  embeddings_format: str = same_option(textcnn.Config, "embeddings_format")
  hidden_size: int = option(256, "Recurrent models: units per layer (and direction).", low=1)
  num_layers: int = option(1, "Recurrent models: stacked recurrent layers.", low=1, high=16)
  bidirectional: bool = option(
      False, "Recurrent classifiers: also read each sentence backwards and concatenate "
      "both directions.")
  state_pooling: str = option(
      "final", "Recurrent classifiers: sentence features from the top layer's final "
      "state, or max / mean over its states at the valid positions.",
      choices=STATE_POOLING)
  dropout: float = same_option(textcnn.Config, "dropout")
  unroll: int = option(1, "Recurrent models: time steps per lax.scan iteration (speed "
                       "only; results are the same).", low=1, high=128)
  scan_groups: int = option(
      0, "LSTM layers: each scan step updates the batch as this many independent blocks "
      "of rows, which XLA:CPU runs on separate cores (speed only; results equal up to "
      "float rounding). 0: 2 on the CPU, 1 elsewhere; a count that does not divide the "
      "batch runs as 1.", low=0, high=64)


def build(config: Config, data_info, cell: str = CELL) -> Network:
  """The classifier as (init, apply) over batches {"tokens", "length"}.

  data_info: .vocab_size, .num_outputs and, for pretrained modes, .pretrained.
  """
  rnn_cell = recurrent.CELLS[cell]
  pretrained = getattr(data_info, "pretrained", None)
  if config.embedding_mode != "rand" and pretrained is None:
    raise ValueError("pretrained embedding modes need data_info.pretrained")
  tables = textcnn.embedding_tables(config)
  input_size = len(tables) * config.embed_dim
  features = config.hidden_size * (2 if config.bidirectional else 1)

  def init(rng):
    embed_rng, rnn_rng, output_rng = jax.random.split(rng, 3)
    if pretrained is not None:
      table = jnp.asarray(pretrained, jnp.float32)
    else:  # as the text CNN: U[-0.25, 0.25]
      table = jax.random.uniform(embed_rng, (data_info.vocab_size, config.embed_dim),
                                 jnp.float32, -0.25, 0.25)
    params = {name: {"embedding": jnp.array(table, copy=True)} for name in tables}
    params["rnn"] = recurrent.init_stack(rnn_cell, rnn_rng, input_size, config.hidden_size,
                                         config.num_layers, config.bidirectional)
    params["output"] = {
        "kernel": nn.initializers.lecun_normal()(output_rng,
                                                 (features, data_info.num_outputs)),
        "bias": jnp.zeros((data_info.num_outputs,))}
    return params

  def apply(params, batch, *, train: bool = False, rng=None):
    stack_rng, output_rng = jax.random.split(rng) if train else (None, None)
    x_BxLxC = textcnn.embed(params, batch["tokens"])
    # An empty sentence still reads one (all-zero PAD) step, so every pooling is defined.
    lengths_B = jnp.maximum(batch["length"], 1)
    carry, h_BxLxF = recurrent.run_stack(
        rnn_cell, params["rnn"], x_BxLxC, lengths_B=lengths_B, dropout_rate=config.dropout,
        rng=stack_rng, unroll=config.unroll, groups=config.scan_groups)
    z_BxF = pool_states(carry, h_BxLxF, lengths_B, config.state_pooling)
    z_BxF = recurrent.dropout(z_BxF, config.dropout, output_rng)
    return z_BxF @ params["output"]["kernel"] + params["output"]["bias"]

  return Network(init=init, apply=apply)


def pool_states(carry, h_BxLxF, lengths_B, kind: str):
  """Sentence features [B, F] from the stack's final carry or its top-layer states."""
  if kind == "final":
    return recurrent.top_state(carry)
  valid_BxLx1 = recurrent.length_mask(lengths_B, h_BxLxF.shape[1])[..., None]
  if kind == "max":
    return jnp.max(jnp.where(valid_BxLx1, h_BxLxF, -jnp.inf), axis=1)
  return jnp.sum(jnp.where(valid_BxLx1, h_BxLxF, 0.0), axis=1) / lengths_B[:, None]


def check(cfg) -> None:
  """Cross-flag rules: the text CNN's embedding rules."""
  textcnn.check(cfg)
