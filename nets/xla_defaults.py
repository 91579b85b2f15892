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
"""

from __future__ import annotations

import os

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
