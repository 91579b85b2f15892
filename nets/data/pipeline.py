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


def bucket_lengths(max_len: int, smallest: int = 8) -> tuple:
  """Padded lengths of the length buckets: powers of two from `smallest`, then max_len."""
  lengths, b = [], smallest
  while b < max_len:
    lengths.append(b)
    b *= 2
  return tuple(lengths) + (max_len,)


def steps_per_epoch(arrays: dict, batch_size: int, buckets: tuple = ()) -> int:
  if not buckets:
    return num_examples(arrays) // batch_size
  counts = np.bincount(_bucket_of(arrays["length"], buckets), minlength=len(buckets))
  return int(sum(c // batch_size for c in counts))


def _bucket_of(lengths: np.ndarray, buckets: tuple) -> np.ndarray:
  return np.searchsorted(np.asarray(buckets), np.maximum(lengths, 1))


def epoch_batches(arrays: dict, batch_size: int, seed: int, epoch: int,
                  buckets: tuple = (), shuffle: bool = True) -> list:
  """(indices, padded length) of every batch of one epoch, in training order.

  With buckets, each batch holds sentences of one length bucket (padded only to that
  bucket's length) and the batches of all buckets are shuffled together; a bucket's
  remainder is dropped, a different one each epoch.
  """
  n = num_examples(arrays)
  # Unshuffled order is for streams (truncated BPTT): row i of batch s+1 continues row i
  # of batch s.
  perm = epoch_permutation(n, seed, epoch) if shuffle else np.arange(n)
  if not buckets:
    return [(perm[i * batch_size:(i + 1) * batch_size], None)
            for i in range(n // batch_size)]
  of = _bucket_of(arrays["length"][perm], buckets)
  batches = []
  for b, length in enumerate(buckets):
    members = perm[of == b]
    batches += [(members[i * batch_size:(i + 1) * batch_size], length)
                for i in range(len(members) // batch_size)]
  order = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
  return [batches[i] for i in order]


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_batches(arrays: dict, batch_size: int, seed: int, start_step: int = 0,
                  rows: slice = slice(None), buckets: tuple = (),
                  shuffle: bool = True) -> Iterator[dict]:
  """Endless training batches from `start_step` on; `rows` picks this process's share."""
  per_epoch = steps_per_epoch(arrays, batch_size, buckets)
  step = start_step
  epoch, batches = None, None
  while True:
    if step // per_epoch != epoch:
      epoch = step // per_epoch
      batches = epoch_batches(arrays, batch_size, seed, epoch, buckets, shuffle)
    idx, length = batches[step % per_epoch]
    idx = idx[rows]
    batch = {k: v[idx] for k, v in arrays.items()}
    if length is not None:
      batch["tokens"] = batch["tokens"][:, :length]
    yield batch
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


def stack_batches(batches: list[dict]) -> dict:
  """Stacks same-size batches on a new leading axis, padding tokens (length last) to the
  longest: length buckets may differ."""
  if "tokens" in batches[0]:
    width = max(b["tokens"].shape[-1] for b in batches)
    pad = lambda t: np.pad(t, [(0, 0)] * (t.ndim - 1) + [(0, width - t.shape[-1])])
    batches = [{**b, "tokens": pad(b["tokens"])} for b in batches]
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def prefetch(batches: Iterator[dict], put: Callable[[dict], dict], size: int = 2):
  """Keeps `size` batches in flight to the devices (device_put is asynchronous)."""
  queue = collections.deque()
  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
