"""Orbax checkpoints: the latest few for resuming, and the best on validation.

All checkpoint code lives here so that a move to Orbax's next API touches one file.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """`latest/` keeps the last `keep` states; `best/` keeps the one with the best metric."""

  def __init__(self, workdir: str, keep: int = 3, best_metric: str = "valid/accuracy",
               best_mode: str = "max", best_on_tie: str = "earlier"):
    self.best_metric, self.best_mode = best_metric, best_mode
    self.best_on_tie = best_on_tie
    root = os.path.abspath(workdir)
    self.latest = ocp.CheckpointManager(
        os.path.join(root, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self.best = ocp.CheckpointManager(
        os.path.join(root, "best"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    self._best_file = os.path.join(root, "best", "best.json")
    self.best_value, self.best_step = self._read_best()

  def _read_best(self):
    step = self.best.latest_step()
    if step is None or not os.path.exists(self._best_file):
      return None, None
    with open(self._best_file) as f:
      info = json.load(f)
    return (info["value"], info["step"]) if info.get("step") == step else (None, None)

  def latest_step(self):
    return self.latest.latest_step()

  def save(self, step: int, state, force: bool = False) -> None:
    self.latest.save(step, args=ocp.args.StandardSave(state), force=force)

  def is_better(self, value: float) -> bool:
    return self.best_value is None or is_better(value, self.best_value, self.best_mode,
                                                 self.best_on_tie)

  def save_if_best(self, step: int, state, metrics: dict) -> bool:
    value = metrics.get(self.best_metric)
    if value is None or not self.is_better(value):
      return False
    self.best.save(step, args=ocp.args.StandardSave(state), force=True)
    self.best.wait_until_finished()
    self.best_value, self.best_step = float(value), int(step)
    if jax.process_index() == 0:
      with open(self._best_file, "w") as f:
        json.dump({"metric": self.best_metric, "value": self.best_value, "step": step,
                   "metrics": metrics}, f)
    return True

  def restore(self, abstract_state, step: int | None = None, which: str = "latest"):
    """Restores into `abstract_state` (ShapeDtypeStructs carrying shardings)."""
    manager = self.best if which == "best" else self.latest
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def close(self) -> None:
    for m in (self.latest, self.best):
      m.wait_until_finished()
      m.close()


def is_better(value: float, best: float, mode: str = "max", on_tie: str = "earlier") -> bool:
  """Whether `value` replaces `best`; on a tie only when on_tie is "later"."""
  if value == best:
    return on_tie == "later"
  return value > best if mode == "max" else value < best
