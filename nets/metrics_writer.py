"""Metrics to metrics.jsonl and TensorBoard; only process 0 writes."""

from __future__ import annotations

import json
import math
import os

import jax


class MetricWriter:

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.active and tensorboard:
      from tensorboardX import SummaryWriter  # lazy: only runs that log pay for it
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def truncate_after(self, step: int) -> None:
    """Drops lines logged after `step`: a resumed run re-logs them from its checkpoint."""
    if not self.active or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [l for l in f if l.strip()]
    kept = [l for l in lines if _step_of(l) is not None and _step_of(l) <= step]
    if len(kept) != len(lines):
      with open(self.path, "w") as f:
        f.writelines(kept)

  def write(self, step: int, epoch: float, metrics: dict) -> None:
    if not self.active:
      return
    record = {"step": int(step), "epoch": round(float(epoch), 4)}
    record.update({k: _plain(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in metrics.items():
        if isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _step_of(line: str):
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError):
    return None


def _plain(v):
  return float(v) if hasattr(v, "item") or isinstance(v, float) else v


def read(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]
