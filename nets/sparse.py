"""Row-sparse updates of embedding tables: a step reads and writes only the rows its batch uses.

A batch of 50 sentences touches ~2.8k of a 20k-word table, yet a dense step builds a
[V, D] gradient by scatter and runs the optimizer over all V rows: more than half of a
Kim-CNN step on the CPU. For optimizers whose update is zero when the gradient is zero
(SGD, Adagrad, RMSProp, Adadelta), an untouched row's parameters do not move and its
accumulators only decay by a constant factor per step. Here the step instead

  1. finds the batch's unique ids (static size, padded with an out-of-range id),
  2. runs the model on the gathered rows with tokens renumbered into them,
  3. applies the same optax optimizer to those rows, after applying the decay^k their
     accumulators missed over the k steps since the row was last touched,
  4. scatters rows and optimizer state back.

That equals the dense update up to float rounding (tests check it). Momentum and Adam
move untouched rows, so they always take the dense path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# Per-step factor by which a row's optimizer accumulators decay when its gradient is 0.
ACCUMULATOR_DECAY = {"sgd": 1.0, "adagrad": 1.0, "rmsprop": 0.9, "adadelta": 0.95}
PAD = 0


def supported(optimizer: str) -> bool:
  return optimizer in ACCUMULATOR_DECAY


def unique_ids(tokens, vocab_size: int):
  """(ids, renumbered tokens): sorted unique ids of the batch, PAD first, padded with V."""
  flat = jnp.concatenate([jnp.zeros((1,), tokens.dtype), tokens.reshape(-1)])
  ids = jnp.unique(flat, size=flat.shape[0], fill_value=vocab_size)
  return ids, jnp.searchsorted(ids, tokens).astype(tokens.dtype)


def gather(table, ids):
  return table.at[ids].get(mode="fill", fill_value=0)


def scatter(table, ids, rows):
  return table.at[ids].set(rows, mode="drop")


def init(tx: optax.GradientTransformation, table):
  return {"opt": tx.init(table), "last": jnp.full((table.shape[0],), -1, jnp.int32)}


def update(tx: optax.GradientTransformation, decay: float, table, state, ids, row_grads,
           step, scale=None):
  """Applies `tx` to the rows `ids` of `table`; returns (table, state)."""
  rows = gather(table, ids)
  V = table.shape[0]
  skipped = step - gather(state["last"], ids) - 1
  catch_up = (jnp.asarray(decay, jnp.float32) ** skipped.astype(jnp.float32))[:, None]
  is_rows = lambda x: getattr(x, "shape", ())[:1] == (V,) and x.ndim == table.ndim
  opt_rows = jax.tree.map(lambda s: gather(s, ids) * catch_up if is_rows(s) else s,
                          state["opt"])
  updates, opt_rows = tx.update(row_grads, opt_rows, rows)
  if scale is not None:  # a replica's learning rate relative to the optimizer's
    updates = updates * scale
  table = scatter(table, ids, rows + updates)
  opt = jax.tree.map(lambda full, new: scatter(full, ids, new) if is_rows(full) else new,
                     state["opt"], opt_rows)
  last = scatter(state["last"], ids, jnp.full(ids.shape, step, jnp.int32))
  return table, {"opt": opt, "last": last}
