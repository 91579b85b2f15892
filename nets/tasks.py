"""What the trainer optimises for each model family, and which metric picks the best step.

A task turns a Network into
  loss_fn(params, model_state, batch, rng, train) -> (mean loss, (sums, model_state))
where `sums` are per-batch sums of metrics with their `count`, so evaluation can average
exactly over padded batches, and `model_state` is state carried from batch to batch (an
RNN's hidden state under truncated BPTT; {} for most models).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nets import losses
from nets.models import Network


@dataclasses.dataclass(frozen=True)
class Task:
  make_loss: Callable[[Network, object], Callable]   # (network, cfg) -> loss_fn
  best_metric: str = "valid/accuracy"                 # selects the `best/` checkpoint
  best_mode: str = "max"
  derived: Callable[[dict], dict] = lambda metrics: {}  # extra metrics from the means


def classification_loss(network: Network, cfg) -> Callable:
  loss = cfg.loss

  def loss_fn(params, model_state, batch, rng, train):
    logits = network.apply(params, batch, train=train, rng=rng)
    per_example = losses.per_example(loss, logits, batch["label"])
    weight = batch.get("mask", jnp.ones_like(per_example))
    count = weight.sum()
    correct = (losses.predict(loss, logits) == batch["label"]) * weight
    sums = {"loss": jnp.sum(per_example * weight), "accuracy": correct.sum(), "count": count}
    return sums["loss"] / jnp.maximum(count, 1.0), (sums, model_state)

  return loss_fn


def token_loss(logits_BxTxV, targets_BxT, weight_BxT, batch):
  """(mean cross-entropy, sums) over weighted target tokens; padded evaluation rows
  (batch["mask"]) weigh 0, so `count` is the number of real tokens."""
  nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
  if "mask" in batch:
    weight_BxT = weight_BxT * batch["mask"][:, None]
  correct_BxT = (jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT) * weight_BxT
  sums = {"loss": jnp.sum(nll_BxT * weight_BxT), "accuracy": correct_BxT.sum(),
          "count": weight_BxT.sum()}
  return sums["loss"] / jnp.maximum(sums["count"], 1.0), sums


def language_model_loss(network: Network, cfg) -> Callable:
  """Mean next-character cross-entropy in nats over the real (weight 1) positions.

  Truncated BPTT: the carried state enters as a constant (stop_gradient), so gradients
  stop at the window's start while the forward pass continues the stream.
  """
  del cfg

  def loss_fn(params, model_state, batch, rng, train):
    logits_BxTxV, model_state = network.apply(
        params, batch, train=train, rng=rng, model_state=jax.lax.stop_gradient(model_state))
    targets_BxT = batch["targets"]
    weight_BxT = batch.get("weight", jnp.ones(targets_BxT.shape, logits_BxTxV.dtype))
    loss, sums = token_loss(logits_BxTxV, targets_BxT, weight_BxT, batch)
    return loss, (sums, model_state)

  return loss_fn


def seq2seq_loss(network: Network, cfg) -> Callable:
  """Mean target-token cross-entropy (teacher forcing) in nats; `count` = target tokens
  (EOS included, padding not), so evaluation averages over tokens, not sentences."""
  del cfg

  def loss_fn(params, model_state, batch, rng, train):
    logits_BxTxV, _ = network.apply(params, batch, train=train, rng=rng)
    targets_BxT = batch["tokens"][..., 1]
    weight_BxT = (targets_BxT != 0).astype(logits_BxTxV.dtype)  # 0 = <pad>
    loss, sums = token_loss(logits_BxTxV, targets_BxT, weight_BxT, batch)
    return loss, (sums, model_state)

  return loss_fn


def perplexity(metrics: dict) -> dict:
  if "loss" not in metrics:
    return {}
  ppl = np.exp(np.minimum(metrics["loss"], 700.0))  # a float, or [R] with replicas
  return {"perplexity": float(ppl) if np.ndim(ppl) == 0 else ppl}


def bits_per_char(metrics: dict) -> dict:
  return {"bits_per_char": metrics["loss"] / math.log(2)} if "loss" in metrics else {}


TASKS = {
    "classification": Task(classification_loss),
    "language_model": Task(language_model_loss, best_metric="valid/loss", best_mode="min",
                           derived=bits_per_char),
    # Selected on validation loss: BLEU needs decoding, left to experiments.evaluate.
    "seq2seq": Task(seq2seq_loss, best_metric="valid/loss", best_mode="min",
                    derived=perplexity),
}


def get(name: str) -> Task:
  return TASKS[name]
