"""Character language model, Elman cell (`--model=rnn_lm`; `--model=lstm_lm` in
nets.lstm_lm is the same network with an LSTM cell), as Karpathy's char-rnn.

Character embeddings -> a stack of recurrent layers -> dropout -> dense logits over the
characters, predicting the next character at every position. Training is truncated
BPTT: each batch row is a `--bptt`-character window of one of `batch_size` parallel
streams of the text, and the final carry of a window is the initial carry of the same
row's next window, carried in the TrainState's `model_state` (gradients stop at the
window's start; see nets.data.chars for the layout and nets.tasks for the loss).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from nets import recurrent, rnn
from nets.config import option
from nets.errors import ConfigError
from nets.models import Network

TASK = "language_model"
DATA = "chars"
CELL = "elman"

# char-rnn's recipe: Adam 2e-3, clipping; the dataset by default is Tiny Shakespeare.
DEFAULTS = dict(dataset="tiny_shakespeare", optimizer="adam", learning_rate=2e-3,
                batch_size=64, num_epochs=10, grad_clip=5.0)


@dataclasses.dataclass(frozen=True)
class Config:
  embed_dim: int = rnn.same_option(rnn.Config, "embed_dim")
  hidden_size: int = rnn.same_option(rnn.Config, "hidden_size")
  num_layers: int = rnn.same_option(rnn.Config, "num_layers")
  dropout: float = rnn.same_option(rnn.Config, "dropout")
  unroll: int = rnn.same_option(rnn.Config, "unroll")
  scan_groups: int = rnn.same_option(rnn.Config, "scan_groups")
  bptt: int = option(
      100, "Language models: characters per truncated-BPTT window; the hidden state "
      "carries over to the next window of the same stream (gradients do not).",
      low=1, high=100000)


@dataclasses.dataclass(frozen=True)
class RecurrentNetwork(Network):
  """A Network whose apply also maps a carried state: apply(..., model_state=) ->
  (outputs, model_state); initial_model_state() is the zero state for a training batch."""

  initial_model_state: Callable[[], dict] = dict


def build(config: Config, data_info, cell: str = CELL) -> RecurrentNetwork:
  """The language model over batches {"tokens": [B, T]} of character ids.

  data_info.info holds "vocabulary" (characters by id) and "streams" (the training
  batch size, i.e. the rows of the carried state).
  """
  rnn_cell = recurrent.CELLS[cell]
  vocab_size = len(data_info.info["vocabulary"])
  streams = data_info.info["streams"]

  def init(rng):
    embed_rng, rnn_rng, output_rng = jax.random.split(rng, 3)
    return {
        "embed": {"embedding": jax.random.normal(embed_rng, (vocab_size, config.embed_dim))},
        "rnn": recurrent.init_stack(rnn_cell, rnn_rng, config.embed_dim, config.hidden_size,
                                    config.num_layers),
        "output": {"kernel": nn.initializers.lecun_normal()(
            output_rng, (config.hidden_size, vocab_size)),
                   "bias": jnp.zeros((vocab_size,))}}

  def initial_model_state(batch_size: int = streams) -> dict:
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))["rnn"]
    return {"carry": recurrent.zero_stack_carry(rnn_cell, shapes, batch_size)}

  def apply(params, batch, *, train: bool = False, rng=None, model_state=None):
    """(logits [B, T, V], {"carry": final carry}); a missing model_state means zeros."""
    tokens_BxT = batch["tokens"]
    carry = None if not model_state else model_state["carry"]
    stack_rng, output_rng = jax.random.split(rng) if train else (None, None)
    table = params["embed"]["embedding"]
    x_BxTxE, first_xw = None, None
    if table.shape[0] < tokens_BxT.size:  # fewer characters than positions
      first_xw = recurrent.embed_projected(
          table, params["rnn"][recurrent.layer_name(0)]["forward"], tokens_BxT)
    else:
      x_BxTxE = jnp.take(table, tokens_BxT, axis=0)
    carry, h_BxTxH = recurrent.run_stack(rnn_cell, params["rnn"], x_BxTxE, carry=carry,
                                         dropout_rate=config.dropout, rng=stack_rng,
                                         unroll=config.unroll, first_xw_TxBxGH=first_xw,
                                         groups=config.scan_groups)
    h_BxTxH = recurrent.dropout(h_BxTxH, config.dropout, output_rng)
    logits_BxTxV = h_BxTxH @ params["output"]["kernel"] + params["output"]["bias"]
    return logits_BxTxV, {"carry": carry}

  return RecurrentNetwork(init=init, apply=apply, initial_model_state=initial_model_state)


@functools.partial(jax.jit, static_argnames=("network", "length"))
def _generate(network, params, prime_P, length: int, temperature, rng):
  # The prime sets the state; its last character's logits give the first sample.
  logits_1xPxV, state = network.apply(params, {"tokens": prime_P[None, :]},
                                      model_state=network.initial_model_state(1))

  def step(carry, step_rng):
    logits_1xV, state = carry
    char_1 = jax.random.categorical(step_rng, logits_1xV / temperature)
    logits_1x1xV, state = network.apply(params, {"tokens": char_1[:, None]},
                                        model_state=state)
    return (logits_1x1xV[:, 0], state), char_1[0]

  _, chars_N = jax.lax.scan(step, (logits_1xPxV[:, -1], state),
                            jax.random.split(rng, length))
  return chars_N


def generate(network: RecurrentNetwork, params, prime_ids, length: int,
             temperature: float = 1.0, seed: int = 0):
  """`length` character ids sampled after the prime ids: one jit-compiled lax.scan, the
  same output for the same seed. Lower temperature: more likely, less varied text."""
  if len(prime_ids) == 0:
    raise ConfigError("--prime must not be empty: sampling starts from its characters")
  if not temperature > 0:
    raise ConfigError(f"--temperature={temperature}: must be > 0")
  return _generate(network, params, jnp.asarray(prime_ids, jnp.int32), length,
                   jnp.float32(temperature), jax.random.PRNGKey(seed))


def check(cfg) -> None:
  """Cross-flag rules of the language models."""
  if cfg.cv_folds:
    raise ConfigError(f"--cv_folds={cfg.cv_folds}: language models train on one text "
                      "split by position; pass --cv_folds=0")
  if cfg.loss != "softmax_xent":
    raise ConfigError(f"--loss={cfg.loss}: language models use softmax_xent (next-char "
                      "cross-entropy)")
