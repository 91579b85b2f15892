"""XLA:CPU flags the project sets before JAX starts its backend (measured, README
"Performance").

jaxlib 0.10 sends convolutions and reductions on the CPU through YNNPACK fusions; for
the shapes here they were slower than XLA's own kernels (LeNet step 84 -> 58 ms, text
CNN 72 -> 61 ms, one run each, back to back). Keeping YNNPACK for plain dots only was as
fast or faster on every benchmark case.

Applied only to the jaxlib series it was measured on (XLA aborts on flags it does not
know), only when the user's XLA_FLAGS does not set the same flag, and not at all with
NETS_XLA_DEFAULTS=0. Flags are read when the backend starts, so this must run before
the first JAX computation: `import nets` does it.

`keep_heap` sets glibc's malloc so that freed memory stays mapped. XLA:CPU allocates a
step's temporaries afresh on every execution (~110 MB for the LSTM LM benchmark step),
from its own threads; glibc serves each such block with a new mmap() and unmaps it on
free, so every step page-faulted its whole working set again (29,000 faults per lstm_lm
step). With one arena, no mmap and no trimming the pages are reused: 1,500 faults per
step and ~15% off the LSTM LM step (README "Performance"). The cost: the process keeps its peak
heap, as a caching allocator does. NETS_KEEP_HEAP=0 (or NETS_XLA_DEFAULTS=0) turns it off.
"""

from __future__ import annotations

import ctypes
import os
import platform

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=individual_dot",)
MEASURED_JAXLIB = (0, 10)


def _jaxlib_series() -> tuple:
  try:
    from importlib.metadata import version
    return tuple(int(p) for p in version("jaxlib").split(".")[:2])
  except Exception:  # not installed, or an unusual version string
    return ()


def apply() -> list[str]:
  """Adds CPU_FLAGS to XLA_FLAGS where they apply; returns the flags added."""
  if os.environ.get("NETS_XLA_DEFAULTS", "1") == "0" or _jaxlib_series() != MEASURED_JAXLIB:
    return []
  current = os.environ.get("XLA_FLAGS", "")
  added = [f for f in CPU_FLAGS if f.split("=")[0] not in current]
  if added:
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
  return added


# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_heap() -> bool:
  """One malloc arena, no mmap'd chunks, no trimming (glibc only); True if applied.

  Arena limits take effect for threads that have not yet picked an arena, so this runs
  at `import nets`, before JAX starts its backend's threads.
  """
  if ("0" in (os.environ.get("NETS_XLA_DEFAULTS"), os.environ.get("NETS_KEEP_HEAP"))
      or platform.libc_ver()[0] != "glibc"):
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  return all(mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
