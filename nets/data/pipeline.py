"""Batches from in-memory arrays, in an order that depends only on (seed, step).

The classic datasets here fit in host memory, so a batch is a numpy slice of a
seeded permutation: a resumed run at step s reads exactly the batches an
uninterrupted run would, and shapes are static (training drops the remainder of an
epoch, or with fixed batches fills it with duplicates; evaluation pads the last batch
and masks the padding).

Two orders: `reshuffle` (a new permutation every epoch) and `fixed` (Kim's code: one
permutation cut into batches once, the last filled with randomly chosen duplicates, and
only the order of the batches shuffled each epoch).
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


def steps_per_epoch(arrays: dict, batch_size: int, buckets: tuple = (),
                    order: str = "reshuffle") -> int:
  def batches(count):
    return -(-count // batch_size) if order == "fixed" else count // batch_size
  if not buckets:
    return int(batches(num_examples(arrays)))
  counts = np.bincount(_bucket_of(arrays["length"], buckets), minlength=len(buckets))
  return int(sum(batches(c) for c in counts))


def _bucket_of(lengths: np.ndarray, buckets: tuple) -> np.ndarray:
  return np.searchsorted(np.asarray(buckets), np.maximum(lengths, 1))


def epoch_batches(arrays: dict, batch_size: int, seed: int, epoch: int,
                  buckets: tuple = (), shuffle: bool = True,
                  order: str = "reshuffle") -> list:
  """(indices, padded length) of every batch of one epoch, in training order.

  With buckets, each batch holds sentences of one length bucket (padded only to that
  bucket's length) and the batches of all buckets are shuffled together; a bucket's
  remainder is dropped, a different one each epoch (with `fixed`, filled, per bucket).
  """
  n = num_examples(arrays)
  fixed = effective_order(order, shuffle) == "fixed"
  # Unshuffled order is for streams (truncated BPTT): row i of batch s+1 continues row i
  # of batch s.
  perm = epoch_permutation(n, seed, 0 if fixed else epoch) if shuffle else np.arange(n)
  groups = [(perm, None)]
  if buckets:
    of = _bucket_of(arrays["length"][perm], buckets)
    groups = [(perm[of == b], length) for b, length in enumerate(buckets)]
  batches = []
  for b, (members, length) in enumerate(groups):
    if fixed:
      members = _fill(members, batch_size, np.random.default_rng([seed, b, 2]))
    batches += [(members[i * batch_size:(i + 1) * batch_size], length)
                for i in range(len(members) // batch_size)]
  if not buckets and not fixed:
    return batches
  shuffled = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
  return [batches[i] for i in shuffled]


def _fill(members: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
  """Kim's extra_data: pads `members` to whole batches with randomly chosen duplicates
  (distinct while they last), then deals everything into a random order."""
  missing = -len(members) % batch_size
  if not missing or not len(members):
    return members
  extra = np.resize(rng.permutation(members), missing)
  return rng.permutation(np.concatenate([members, extra]))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def effective_order(order: str, shuffle: bool) -> str:
  """Streams (unshuffled data, truncated BPTT) are read in order whatever `order` says."""
  return order if shuffle else "reshuffle"


def train_batches(arrays: dict, batch_size: int, seed: int, start_step: int = 0,
                  rows: slice = slice(None), buckets: tuple = (),
                  shuffle: bool = True, order: str = "reshuffle") -> Iterator[dict]:
  """Endless training batches from `start_step` on; `rows` picks this process's share."""
  order = effective_order(order, shuffle)
  per_epoch = steps_per_epoch(arrays, batch_size, buckets, order)
  step = start_step
  epoch, batches = None, None
  while True:
    if step // per_epoch != epoch:
      epoch = step // per_epoch
      batches = epoch_batches(arrays, batch_size, seed, epoch, buckets, shuffle, order)
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
