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


def run_entry_point(main) -> None:
  """What every `python -m experiments.X` does around its `main()`.

  Flags are parsed with one-line errors, positional arguments are refused, TensorFlow is
  kept off the GPUs, Orbax is kept quiet, the persistent compilation cache is set up
  where the entry point defines --compilation_cache_dir, and a UserError from main()
  becomes one line on stderr with exit status 2.
  """
  from absl import app

  def absl_main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    hide_gpus_from_tensorflow()
    quiet_logging()

    def main_with_cache():
      use_compilation_cache()
      main()
    run_main(main_with_cache)

  app.run(absl_main, flags_parser=parse_flags)


def run_main(fn) -> None:
  """Runs fn(); a UserError becomes one line on stderr and exit status 2, no traceback."""
  try:
    fn()
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def default_compilation_cache_dir() -> str:
  if "NETS_COMPILATION_CACHE" in os.environ:
    return os.environ["NETS_COMPILATION_CACHE"]
  cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
  return os.path.join(cache_home, "nets", "jax")


def define_compilation_cache_flag() -> None:
  from absl import flags
  flags.DEFINE_string(
      "compilation_cache_dir", default_compilation_cache_dir(),
      "JAX's persistent compilation cache: programs that took over a second to compile "
      "are stored here and reused by later runs of the same shapes and config (a "
      "resumed run, another seed). Empty turns it off. Default from "
      "NETS_COMPILATION_CACHE, else $XDG_CACHE_HOME/nets/jax.")


def use_compilation_cache() -> None:
  """Points JAX at --compilation_cache_dir, where the entry point defines that flag."""
  from absl import flags
  from nets.errors import ConfigError
  if "compilation_cache_dir" not in flags.FLAGS or not flags.FLAGS.compilation_cache_dir:
    return
  path = os.path.expanduser(flags.FLAGS.compilation_cache_dir)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    message = (f"--compilation_cache_dir={path}: cannot create it ({e.strerror}); give a "
               "writable directory, or an empty value to turn the cache off")
    if flags.FLAGS["compilation_cache_dir"].present:
      raise ConfigError(message) from None
    print(f"warning: {message}; running without it", file=sys.stderr)  # the default's
    return
  import jax
  jax.config.update("jax_compilation_cache_dir", path)


def define_distributed_flags() -> None:
  from absl import flags
  flags.DEFINE_boolean(
      "multihost", False, "Run as one process of a multi-process job: calls "
      "jax.distributed.initialize() before anything else. On Slurm and Cloud TPU VMs the "
      "cluster is detected; elsewhere give --coordinator_address, --num_processes, "
      "--process_id. Also enabled by NETS_MULTIHOST=1.")
  flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-host "
                      "without Slurm/TPU auto-detection).")
  flags.DEFINE_integer("num_processes", 0, "Number of processes (0: auto-detect).")
  flags.DEFINE_integer("process_id", -1, "This process's index (-1: auto-detect).")


def initialize_distributed() -> None:
  """jax.distributed.initialize() when asked; must precede every other JAX call."""
  from absl import flags
  from nets.errors import ConfigError
  FLAGS = flags.FLAGS
  if not (FLAGS.multihost or os.environ.get("NETS_MULTIHOST") == "1"):
    return
  import jax
  kwargs = {}
  if FLAGS.coordinator_address:
    if FLAGS.num_processes < 1 or FLAGS.process_id < 0:
      raise ConfigError("--coordinator_address needs --num_processes and --process_id")
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
      raise ConfigError(f"--process_id={FLAGS.process_id}: must be in [0, "
                        f"{FLAGS.num_processes})")
    kwargs = dict(coordinator_address=FLAGS.coordinator_address,
                  num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    # CPU devices of different processes talk through gloo (GPUs/TPUs bring their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


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
