"""Pictures of a training run: python -m experiments.plot --workdir=DIR.

Writes, next to the run's files (or into --output_dir):
  curves.png    loss and accuracy by step for train / valid / test, from metrics.jsonl
                (any model family);
  filters.png   the first convolution layer's filters as an image grid (ConvNet runs;
                restored from the best checkpoint, or --checkpoint=latest).
A cross-validation workdir gets both for every fold (DIR/foldNN/*.png).
"""

from __future__ import annotations

import json
import math
import os

from absl import flags

from experiments.main import run_entry_point
from nets.errors import ConfigError, UserError

flags.DEFINE_string("workdir", None, "Workdir of a training run (holds metrics.jsonl), or "
                    "of a cross-validation run (holds fold00, fold01, ...).")
flags.DEFINE_string("output_dir", "", "Where to write the PNGs (default: the workdir "
                    "itself, or each fold's directory).")
flags.DEFINE_string("checkpoint", "best", "Checkpoint whose filters are drawn: best (on "
                    "validation) or latest.")
FLAGS = flags.FLAGS

SPLITS = ("train", "valid", "test")
METRICS = ("loss", "accuracy")


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          records.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise UserError(f"{path}:{number}: not a JSON line ({e.msg})") from e
  return records


def curves(records: list[dict]) -> dict:
  """{(split, metric): (steps, values)} for every split/metric present in the records."""
  out = {}
  for split in SPLITS:
    for metric in METRICS:
      key = f"{split}/{metric}"
      points = [(r["step"], r[key]) for r in records if key in r and "step" in r]
      if points:
        out[(split, metric)] = tuple(map(list, zip(*points)))
  return out


def plot_curves(records: list[dict], path: str, title: str = "") -> str:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  lines = curves(records)
  fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4))
  for ax, metric in zip(axes, METRICS):
    for split in SPLITS:
      if (split, metric) in lines:
        steps, values = lines[(split, metric)]
        ax.plot(steps, values, label=split, marker="" if split == "train" else ".")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def filter_grid(kernel_HxWxIxO):
  """The O filters of a conv kernel as one image [rows*(H+1)-1, cols*(W+1)-1(, 3)].

  Each filter is scaled to [0, 1] on its own (what matters is its pattern); 3 input
  channels are shown as RGB, any other number as their mean.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  k = np.asarray(kernel_HxWxIxO, np.float64)
  H, W, I, O = k.shape
  k = k if I == 3 else k.mean(axis=2, keepdims=True)
  lo = k.min(axis=(0, 1, 2), keepdims=True)
  hi = k.max(axis=(0, 1, 2), keepdims=True)
  k = (k - lo) / np.maximum(hi - lo, 1e-12)
  cols = math.ceil(math.sqrt(O))
  rows = math.ceil(O / cols)
  grid = np.ones((rows * (H + 1) - 1, cols * (W + 1) - 1, k.shape[2]))  # white gaps
  for o in range(O):
    r, c = divmod(o, cols)
    grid[r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W] = k[..., o]
  return grid if k.shape[2] == 3 else grid[..., 0]


def plot_filters(kernel_HxWxIxO, path: str, title: str = "") -> str:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  grid = filter_grid(kernel_HxWxIxO)
  fig, ax = plt.subplots(figsize=(6, 6))
  ax.imshow(grid, cmap="gray", interpolation="nearest", vmin=0.0, vmax=1.0)
  ax.set_axis_off()
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def first_conv_kernel(workdir: str, which: str = "best"):
  """The first conv layer's kernel [H, W, in, out] of a ConvNet run, or None for others."""
  with open(os.path.join(workdir, "config.json")) as f:
    if json.load(f).get("model") != "convnet":
      return None
  from nets.trainer import restore_for_eval  # pylint: disable=g-import-not-at-top
  state = restore_for_eval(workdir, which)[2]
  import jax  # pylint: disable=g-import-not-at-top
  params = jax.device_get(state.params)
  convs = sorted((k for k in params if k.startswith("conv")), key=lambda k: int(k[4:]))
  return params[convs[0]]["kernel"] if convs else None


def run_dirs(workdir: str) -> list[str]:
  """The directories holding metrics.jsonl: the workdir, or its CV folds."""
  if not os.path.isdir(workdir):
    raise UserError(f"--workdir={workdir}: no such directory")
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    return [workdir]
  folds = sorted(os.path.join(workdir, d) for d in os.listdir(workdir)
                 if d.startswith("fold") and
                 os.path.exists(os.path.join(workdir, d, "metrics.jsonl")))
  if not folds:
    raise UserError(f"{workdir} holds no metrics.jsonl (nor fold*/metrics.jsonl): pass the "
                    "--workdir of a run of experiments.train")
  return folds


def plot_workdir(workdir: str, output_dir: str = "", which: str = "best") -> list[str]:
  """Writes curves.png (and filters.png for ConvNets) per run directory; returns paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # files only: no display needed
  written = []
  dirs = run_dirs(workdir)
  for run_dir in dirs:
    out = run_dir
    if output_dir:
      out = output_dir if len(dirs) == 1 else os.path.join(output_dir,
                                                           os.path.basename(run_dir))
    os.makedirs(out, exist_ok=True)
    records = read_metrics(run_dir)
    if not curves(records):
      raise UserError(f"{run_dir}/metrics.jsonl has no loss or accuracy records yet: "
                      "plot after the first logged step")
    name = os.path.basename(os.path.normpath(run_dir))
    written.append(plot_curves(records, os.path.join(out, "curves.png"), name))
    if os.path.exists(os.path.join(run_dir, "config.json")):
      kernel = first_conv_kernel(run_dir, which)
      if kernel is not None:
        title = f"{name}: {kernel.shape[3]} first-layer filters {kernel.shape[0]}x{kernel.shape[1]}"
        written.append(plot_filters(kernel, os.path.join(out, "filters.png"), title))
  return written


def main():
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required: the directory of a training run")
  if FLAGS.checkpoint not in ("best", "latest"):
    raise ConfigError(f"--checkpoint={FLAGS.checkpoint}: must be one of best, latest")
  for path in plot_workdir(FLAGS.workdir, FLAGS.output_dir, FLAGS.checkpoint):
    print(path)


if __name__ == "__main__":
  run_entry_point(main)
