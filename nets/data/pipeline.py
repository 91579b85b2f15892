"""Batches from in-memory arrays, in an order that depends only on (seed, step).

The classic datasets here fit in host memory, so a batch is a numpy slice of a
seeded permutation: a resumed run at step s reads exactly the batches an
uninterrupted run would, and shapes are static (training drops the remainder of an
epoch; evaluation pads the last batch and masks the padding).
"""

from __future__ import annotations

import collections
from typing import Callable, Iterator

import numpy as np


def num_examples(arrays: dict) -> int:
  return len(next(iter(arrays.values())))


def steps_per_epoch(arrays: dict, batch_size: int) -> int:
  return num_examples(arrays) // batch_size


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(arrays: dict, batch_size: int, seed: int, start_step: int = 0,
                  rows: slice = slice(None)) -> Iterator[dict]:
  """Endless training batches from `start_step` on; `rows` picks this process's share."""
  n = num_examples(arrays)
  per_epoch = n // batch_size
  step = start_step
  epoch, perm = None, None
  while True:
    if step // per_epoch != epoch:
      epoch = step // per_epoch
      perm = epoch_permutation(n, seed, epoch)
    i = step % per_epoch
    idx = perm[i * batch_size:(i + 1) * batch_size][rows]
    yield {k: v[idx] for k, v in arrays.items()}
    step += 1


def eval_batches(arrays: dict, batch_size: int, rows: slice = slice(None)) -> Iterator[dict]:
  """Every example once, in order; the last batch is padded and `mask` marks real rows."""
  n = num_examples(arrays)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = idx < n
    idx = np.where(mask, idx, 0)[rows]
    batch = {k: v[idx] for k, v in arrays.items()}
    batch["mask"] = mask[rows].astype(np.float32)
    yield batch


def prefetch(batches: Iterator[dict], put: Callable[[dict], dict], size: int = 2):
  """Keeps `size` batches in flight to the devices (device_put is asynchronous)."""
  queue = collections.deque()
  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
