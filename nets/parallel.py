"""Data parallelism on a device mesh: one code path for 1 device, N devices, N hosts."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nets.errors import ConfigError


def make_mesh() -> Mesh:
  """A 1-D mesh with a `data` axis over every device JAX sees (all hosts)."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
  """Batches split along `data`; `leading_axes` unsplit axes come first (e.g. replicas)."""
  return NamedSharding(mesh, P(*([None] * leading_axes), "data"))


def check_batch_size(batch_size: int, mesh: Mesh, flag: str = "batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise ConfigError(f"--{flag}={batch_size}: must divide by the {n} devices of the mesh "
                      f"(try {max(n, batch_size // n * n)})")


def local_slice(global_batch_size: int) -> slice:
  """The rows of a global batch that this process feeds."""
  per_process = global_batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
  """Assembles this process's rows into global arrays sharded along `data`."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  # (global shape from local rows: the split axis is the one named `data`.)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
