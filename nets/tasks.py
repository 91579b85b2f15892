"""What the trainer optimises for each model family, and which metric picks the best step.

A task turns a Network into
  loss_fn(params, model_state, batch, rng, train) -> (mean loss, (sums, model_state))
where `sums` are per-batch sums of metrics with their `count`, so evaluation can average
exactly over padded batches, and `model_state` is state carried from batch to batch (an
RNN's hidden state under truncated BPTT; {} for most models).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp

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


TASKS = {
    "classification": Task(classification_loss),
}


def get(name: str) -> Task:
  return TASKS[name]
