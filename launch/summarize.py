"""Tabulate a sweep: python -m launch.summarize SWEEP_DIR [--metric=test/accuracy].

Reads every run's summary.json and config.json under SWEEP_DIR into one table: the flags
that vary across runs, then the metrics, best run first. Prints it aligned and writes it
as CSV (default SWEEP_DIR/summary.csv). Cross-validation runs show the mean and the
`_std` over folds side by side.
"""

import csv
import json
import os

from absl import app, flags

from experiments.main import parse_flags, run_main
from nets.errors import UserError

flags.DEFINE_string(
    "metric", "test/accuracy",
    "summary.json key to rank runs by, e.g. test/accuracy, valid/accuracy, test/loss.")
flags.DEFINE_enum(
    "mode", "auto", ("auto", "max", "min"),
    "Whether higher or lower --metric is better; auto: min for losses, errors and "
    "perplexities, max otherwise.")
flags.DEFINE_string("csv", "", "Where to write the table as CSV (default: SWEEP_DIR/summary.csv).")

FLAGS = flags.FLAGS
LOWER_IS_BETTER = ("loss", "error", "perplexity")
TRAILING_COLUMNS = ("steps", "folds", "wall_time_s")  # run facts after the metrics


def read_json(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def collect(sweep_dir: str) -> tuple[list[dict], list[str]]:
  """([{"run", "config", "summary"}] of finished runs, names of unfinished ones)."""
  if not os.path.isdir(sweep_dir):
    raise UserError(f"sweep dir not found: {sweep_dir}")
  finished, unfinished = [], []
  for name in sorted(os.listdir(sweep_dir)):
    config = read_json(os.path.join(sweep_dir, name, "config.json"))
    if config is None:
      continue  # not a run (e.g. slurm/ output)
    summary = read_json(os.path.join(sweep_dir, name, "summary.json"))
    if summary is None:
      unfinished.append(name)
    else:
      finished.append({"run": name, "config": flat_config(config), "summary": summary})
  return finished, unfinished


def flat_config(config: dict) -> dict:
  """config.json as flag -> value: the model family's fields join the run's."""
  flat = {k: v for k, v in config.items() if k != "model_config"}
  flat.update(config.get("model_config") or {})
  return {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in flat.items()}


def varying_flags(configs: list[dict]) -> list[str]:
  names = []
  for config in configs:
    names += [k for k in config if k not in names]
  return [k for k in names if k != "workdir"
          and len({json.dumps(c.get(k)) for c in configs}) > 1]


def metric_mode(metric: str) -> str:
  return "min" if any(word in metric.split("/")[-1] for word in LOWER_IS_BETTER) else "max"


def metric_columns(summaries: list[dict], metric: str) -> list[str]:
  """The ranking metric and its std first, then every other split/metric key, each
  followed by its std, then run facts (steps, wall time)."""
  keys = {k for s in summaries for k, v in s.items()
          if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
  bases = sorted({k.removesuffix("_std") for k in keys} - {metric})
  columns = []
  for base in [metric, *bases]:
    columns += [k for k in (base, base + "_std") if k in keys]
  facts = [k for k in TRAILING_COLUMNS if any(k in s for s in summaries)]
  return columns + facts


def rank(rows: list[dict], metric: str, mode: str) -> list[dict]:
  """Best first; runs without the metric last, in their original order."""
  def key(row):
    value = row["summary"].get(metric)
    if not isinstance(value, (int, float)):
      return (1, 0.0)
    return (0, -value if mode == "max" else value)
  return sorted(rows, key=key)


def table(rows: list[dict], metric: str, mode: str) -> tuple[list[str], list[list]]:
  """(header, rows of values): run name, varying flags, metrics, best first."""
  flag_names = varying_flags([r["config"] for r in rows])
  metrics = metric_columns([r["summary"] for r in rows], metric)
  # Flags as written on the command line; only metrics get rounded for display.
  body = [[row["run"], *(_flag_text(row["config"].get(f)) for f in flag_names),
           *(row["summary"].get(m) for m in metrics)]
          for row in rank(rows, metric, mode)]
  return ["run", *flag_names, *metrics], body


def _flag_text(value) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  return "-" if value is None else str(value)


def show(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4f}"
  return str(value)


def format_table(header: list[str], body: list[list]) -> str:
  cells = [header] + [[show(v) for v in row] for row in body]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
  # Text left-aligned, numbers right-aligned so their digits line up.
  numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in body)
             for i in range(len(header))]
  lines = ["  ".join(c.rjust(w) if num else c.ljust(w)
                     for c, w, num in zip(row, widths, numeric)).rstrip()
           for row in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def write_csv(path: str, header: list[str], body: list[list]) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in body])


def main(argv):
  def work():
    if len(argv) != 2:
      raise UserError("give exactly one sweep dir: python -m launch.summarize SWEEP_DIR")
    sweep_dir = argv[1]
    rows, unfinished = collect(sweep_dir)
    if not rows:
      raise UserError(f"no finished runs (with summary.json) in {sweep_dir}"
                      + (f"; unfinished: {', '.join(unfinished)}" if unfinished else ""))
    metric = FLAGS.metric
    if not any(metric in r["summary"] for r in rows):
      available = metric_columns([r["summary"] for r in rows], metric)
      raise UserError(f"--metric={metric}: no run has it; try one of "
                      f"{', '.join(c for c in available if '/' in c)}")
    mode = metric_mode(metric) if FLAGS.mode == "auto" else FLAGS.mode
    header, body = table(rows, metric, mode)
    print(f"{len(rows)} runs in {sweep_dir}, best first by {metric} ({mode}):")
    print(format_table(header, body))
    if unfinished:
      print(f"unfinished (no summary.json yet): {', '.join(unfinished)}")
    csv_path = FLAGS.csv or os.path.join(sweep_dir, "summary.csv")
    write_csv(csv_path, header, body)
    print(f"wrote {csv_path}")

  run_main(work)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
