"""Optimizers by name, with schedule, clipping and frozen parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from nets.config import Config


def schedule(cfg: Config, total_steps: int):
  peak = cfg.learning_rate
  if cfg.lr_schedule == "constant":
    body = optax.constant_schedule(peak)
  else:  # cosine to zero over the steps after warm-up
    body = optax.cosine_decay_schedule(peak, max(total_steps - cfg.warmup_steps, 1))
  if not cfg.warmup_steps:
    return body
  warm = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
  return optax.join_schedules([warm, body], [cfg.warmup_steps])


def base_optimizer(name: str, lr, momentum: float = 0.9) -> optax.GradientTransformation:
  if name == "sgd":
    return optax.sgd(lr)
  if name == "momentum":
    return optax.sgd(lr, momentum=momentum)
  if name == "adagrad":
    return optax.adagrad(lr)
  if name == "rmsprop":
    return optax.rmsprop(lr, decay=0.9)
  if name == "adam":
    return optax.adam(lr)
  if name == "adamw":
    return optax.adamw(lr)
  if name == "adadelta":  # Kim (2014) / Zeiler (2012) constants
    return optax.adadelta(lr, rho=0.95, eps=1e-6)
  raise ValueError(f"unknown optimizer {name!r}")


def is_frozen(path) -> bool:
  """Parameters under a module whose name starts with 'frozen' are never updated."""
  return any(str(getattr(k, "key", k)).startswith("frozen") for k in path)


def make_rows(cfg: Config, total_steps: int) -> optax.GradientTransformation:
  """The same optimizer, applied to the rows of an embedding table (see nets.sparse)."""
  return base_optimizer(cfg.optimizer, schedule(cfg, total_steps), cfg.momentum)


def clip_by_global_norm(grads, max_norm: float):
  """Scales all gradients together so their global L2 norm is at most max_norm (0: off)."""
  if not max_norm:
    return grads
  norm = optax.global_norm(grads)
  scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))
  return jax.tree.map(lambda g: g * scale, grads)


def make(cfg: Config, total_steps: int) -> optax.GradientTransformation:
  """The optimizer for dense parameters; frozen ones get zero updates.

  Clipping is not part of it: the train step clips every gradient (dense and row-sparse)
  by one global norm first.
  """
  tx = base_optimizer(cfg.optimizer, schedule(cfg, total_steps), cfg.momentum)
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda p, _: "frozen" if is_frozen(p) else "trained", params)
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
