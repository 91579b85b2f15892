"""Run a sweep: python -m launch.sweep SWEEP_FILE --runner=local|slurm|print.

Expands the sweep file's products and zips into runs of `python -m experiments.train`,
each with its own workdir SWEEP_DIR/NAME named from its flag values. Re-running the same
command skips finished runs (summary.json) and resumes unfinished ones. See
launch/README.md.
"""

import os
import sys

from absl import app, flags

from experiments.main import parse_flags, run_main
from launch import runners, spec
from nets.errors import UserError

RUNNERS = ("local", "slurm", "print")

flags.DEFINE_enum(
    "runner", "print", RUNNERS,
    "Where the runs go: local (this machine, see --parallel/--gpus), slurm (write a "
    "job-array script into the sweep dir and sbatch it if sbatch is on PATH), print (print "
    "one command per run and run nothing).")
flags.DEFINE_string(
    "sweep_dir", "",
    "Directory holding one workdir per run (default: workdirs/<sweep file name>).")
flags.DEFINE_integer(
    "parallel", 1,
    "local: runs at a time (default: 1, or one per GPU of --gpus); slurm: the most array "
    "tasks running at once (default: no limit).", lower_bound=1)
flags.DEFINE_list(
    "gpus", [],
    "local: GPU ids to pin runs to, one per concurrent run via CUDA_VISIBLE_DEVICES "
    "(default with --parallel>1: $CUDA_VISIBLE_DEVICES or every GPU nvidia-smi lists).")
flags.DEFINE_multi_string(
    "sbatch_option", [],
    "slurm: an extra #SBATCH option, repeatable, e.g. --sbatch_option=--gres=gpu:1 "
    "--sbatch_option=--time=04:00:00.")
flags.DEFINE_boolean(
    "dry_run", False,
    "Show what would run (local: each run's status and command; slurm: the script) "
    "and write or run nothing.")

FLAGS = flags.FLAGS


def say(line: str) -> None:
  print(line, flush=True)  # progress must show up as it happens, also when piped


def default_sweep_dir(sweep_file: str) -> str:
  return os.path.join("workdirs", os.path.splitext(os.path.basename(sweep_file))[0])


def load_runs(sweep_file: str) -> list:
  runs = spec.expand(spec.load_sweep_file(sweep_file))
  unknown = spec.unknown_flags(runs, spec.train_flag_names())
  if unknown:
    # Caught here rather than by N failing runs.
    raise spec.SweepError(f"{sweep_file}: unknown flag(s) {', '.join(unknown)} (see "
                            "python -m experiments.train --helpfull)")
  return runs


def run_locally(jobs, sweep_dir: str) -> int:
  gpus = [g.strip() for g in FLAGS.gpus]
  parallel = FLAGS.parallel
  if gpus and not FLAGS["parallel"].present:
    parallel = len(gpus)
  if not gpus and parallel > 1:
    gpus = runners.detect_gpus()
  if FLAGS.dry_run:
    actions = {runners.FINISHED: "skip", runners.UNFINISHED: "resume", runners.NEW: "start"}
    for index, (job, line) in enumerate(zip(jobs, runners.command_lines(jobs)), 1):
      say(f"[{index}/{len(jobs)}] would {actions[job.status]} {job.name}: {line}")
    return 0
  say(f"sweep: {len(jobs)} runs in {sweep_dir}, {parallel} at a time"
      + (f" on GPUs {','.join(gpus)}" if gpus else ""))
  tally = runners.run_local(jobs, parallel=parallel, gpus=gpus, out=say)
  say(tally.line())
  return 1 if tally.failed else 0


def run_on_slurm(jobs, sweep_dir: str, sweep_file: str) -> int:
  pending = [job for job in jobs if job.status != runners.FINISHED]
  for job in jobs:
    if job.status == runners.FINISHED:
      print(f"skipped  {job.name}: finished (summary.json)")
  if not pending:
    print(f"all {len(jobs)} runs finished; nothing to submit")
    return 0
  job_name = os.path.splitext(os.path.basename(sweep_file))[0]
  max_running = FLAGS.parallel if FLAGS["parallel"].present else 0
  script = runners.slurm_script(pending, sweep_dir, job_name, max_running,
                                FLAGS.sbatch_option)
  if FLAGS.dry_run:
    print(script, end="")
    return 0
  path = runners.write_slurm_script(script, sweep_dir)
  print(f"wrote {path}: a job array of {len(pending)} runs "
        f"({len(jobs) - len(pending)} finished ones left out)")
  runners.submit(path)
  return 0


def main(argv):
  status = 0

  def work():
    nonlocal status
    if len(argv) != 2:
      raise UserError("give exactly one sweep file: python -m launch.sweep SWEEP_FILE "
                      "--runner=local|slurm|print" + (f" (got: {' '.join(argv[1:])})"
                                                       if len(argv) > 2 else ""))
    sweep_file = argv[1]
    sweep_dir = FLAGS.sweep_dir or default_sweep_dir(sweep_file)
    jobs = runners.plan(load_runs(sweep_file), sweep_dir)
    if FLAGS.runner == "print":
      print("\n".join(runners.command_lines(jobs)))
    elif FLAGS.runner == "local":
      status = run_locally(jobs, sweep_dir)
    else:
      status = run_on_slurm(jobs, sweep_dir, sweep_file)

  run_main(work)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
