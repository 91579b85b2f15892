"""What every entry point does around its work: one-line errors, process and device info."""

from __future__ import annotations

import os
import sys

from absl import logging

from nets.errors import UserError


def parse_flags(argv):
  """absl's parser, with its errors in this project's one-line form (exit status 2)."""
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e} (see --helpfull)", file=sys.stderr)
    sys.exit(2)


def run_main(fn) -> None:
  """Runs fn(); a UserError becomes one line on stderr and exit status 2, no traceback."""
  try:
    fn()
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def quiet_logging() -> None:
  """Orbax logs every save at INFO; keep the terminal for the progress bar and results."""
  from absl import flags
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def log_environment() -> None:
  import jax
  print(f"jax {jax.__version__}, process {jax.process_index() + 1}/{jax.process_count()}, "
        f"{jax.device_count()} {jax.default_backend()} device(s): {jax.devices()}",
        file=sys.stderr)


def hide_gpus_from_tensorflow() -> None:
  """tf.data must not take GPU memory from JAX; only matters if TF gets imported."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if "tensorflow" in sys.modules:
    sys.modules["tensorflow"].config.set_visible_devices([], "GPU")
