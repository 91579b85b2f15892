"""Where a sweep's runs go: this machine (one by one, or one per GPU), a Slurm job array,
or stdout. Every runner gives a run the same command and the same workdir, so a sweep
started on one can be finished on another.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from launch.spec import Run, flag_args
from nets.errors import UserError

NEW, UNFINISHED, FINISHED = "new", "unfinished", "finished"
LOG_NAME = "train.log"          # each run's stdout and stderr, appended across attempts
SCRIPT_NAME = "sweep.sbatch"


@dataclasses.dataclass(frozen=True)
class Job:
  """A run placed in a sweep dir: what to execute, where, and how far it got."""
  name: str
  workdir: str
  command: list
  status: str  # NEW, UNFINISHED (the trainer resumes it) or FINISHED (skipped)

  @property
  def log(self) -> str:
    return os.path.join(self.workdir, LOG_NAME)


def run_status(workdir: str) -> str:
  # summary.json is the trainer's last write; config.json its first.
  if os.path.exists(os.path.join(workdir, "summary.json")):
    return FINISHED
  if os.path.exists(os.path.join(workdir, "config.json")):
    return UNFINISHED
  return NEW


def train_command(run: Run, workdir: str, python: str = sys.executable) -> list[str]:
  return [python, "-m", "experiments.train", *flag_args(run.flags), f"--workdir={workdir}"]


def plan(runs: list[Run], sweep_dir: str) -> list[Job]:
  sweep_dir = os.path.abspath(sweep_dir)  # commands must work from any directory
  jobs = []
  for run in runs:
    workdir = os.path.join(sweep_dir, run.name)
    jobs.append(Job(run.name, workdir, train_command(run, workdir), run_status(workdir)))
  return jobs


# --- print ----------------------------------------------------------------------------------

def command_lines(jobs: list[Job]) -> list[str]:
  """One shell line per run, finished ones included (they exit at once when rerun)."""
  return [shlex.join(job.command) for job in jobs]


# --- local ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Tally:
  finished: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)
  failed: list = dataclasses.field(default_factory=list)

  def line(self) -> str:
    total = len(self.finished) + len(self.skipped) + len(self.failed)
    text = (f"{total} runs: {len(self.finished)} finished, {len(self.skipped)} skipped "
            f"(already finished), {len(self.failed)} failed")
    return text + (f": {', '.join(self.failed)}" if self.failed else "")


def gpu_env(slot: int, gpus: list[str], parallel: int, base_env: dict) -> tuple[dict, str]:
  """The environment of a run in this slot, pinned to one GPU when GPUs are given."""
  env = dict(base_env)
  if not gpus:
    return env, ""
  gpu = gpus[slot % len(gpus)]
  env["CUDA_VISIBLE_DEVICES"] = gpu
  if parallel > len(gpus):
    # Several runs share a GPU: JAX must not grab most of its memory up front.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env, gpu


def run_local(jobs: list[Job], parallel: int = 1, gpus: list[str] = (), out=print,
              env: dict | None = None, poll_s: float = 0.2) -> Tally:
  """Runs the unfinished jobs, at most `parallel` at a time; a failure does not stop others."""
  base_env = dict(os.environ if env is None else env)
  total, tally = len(jobs), Tally()
  todo = collections.deque()
  for index, job in enumerate(jobs, 1):
    if job.status == FINISHED:
      out(f"[{index}/{total}] skipped  {job.name}: finished (summary.json)")
      tally.skipped.append(job.name)
    else:
      todo.append((index, job))
  free_slots = collections.deque(range(parallel))
  running = {}  # slot -> (index, job, process, start time, log file)
  try:
    while todo or running:
      while todo and free_slots:
        slot = free_slots.popleft()
        index, job = todo.popleft()
        run_env, gpu = gpu_env(slot, list(gpus), parallel, base_env)
        log = _open_log(job)
        process = subprocess.Popen(job.command, env=run_env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        running[slot] = (index, job, process, time.monotonic(), log)
        how = "resuming" if job.status == UNFINISHED else "new"
        where = f", GPU {gpu}" if gpu else ""
        out(f"[{index}/{total}] started  {job.name} ({how}{where}; log {job.log})")
      time.sleep(poll_s)
      for slot, (index, job, process, started, log) in list(running.items()):
        if process.poll() is None:
          continue
        log.close()
        del running[slot]
        free_slots.append(slot)
        seconds = time.monotonic() - started
        if process.returncode == 0:
          out(f"[{index}/{total}] finished {job.name} in {seconds:.0f}s")
          tally.finished.append(job.name)
        else:
          out(f"[{index}/{total}] FAILED   {job.name} (exit {process.returncode} after "
              f"{seconds:.0f}s): {last_error(job.log)} (log {job.log})")
          tally.failed.append(job.name)
  except KeyboardInterrupt:
    # The trainer saves a checkpoint on SIGINT; wait for it so a rerun resumes.
    for _, _, process, _, _ in running.values():
      process.send_signal(signal.SIGINT)
    for _, _, process, _, log in running.values():
      process.wait()
      log.close()
    raise UserError("sweep interrupted: rerun the same command to resume the unfinished "
                    "runs") from None
  return tally


def _open_log(job: Job):
  os.makedirs(job.workdir, exist_ok=True)
  log = open(job.log, "a")
  log.write(f"=== launch.sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{shlex.join(job.command)}\n")
  log.flush()  # before the child appends to the same file
  return log


def last_error(log_path: str, tail_bytes: int = 65536) -> str:
  """The run's one-line `error:` if it printed one, else its last line of output."""
  try:
    with open(log_path, "rb") as f:
      f.seek(max(0, os.path.getsize(log_path) - tail_bytes))
      lines = [l.strip() for l in f.read().decode(errors="replace").splitlines() if l.strip()]
  except OSError:
    return "no log"
  errors = [l for l in lines if l.startswith("error:")]
  return (errors or lines or ["no output"])[-1]


def detect_gpus(env: dict | None = None) -> list[str]:
  """GPU ids this process may use: $CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
  env = os.environ if env is None else env
  visible = env.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
  if not shutil.which("nvidia-smi", path=env.get("PATH")):
    return []
  try:
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                             timeout=30).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i, line in enumerate(l for l in listing.splitlines()
                                          if l.startswith("GPU "))]


# --- slurm ----------------------------------------------------------------------------------

def slurm_script(jobs: list[Job], sweep_dir: str, job_name: str, max_running: int = 0,
                 sbatch_options: list[str] = (), cwd: str | None = None) -> str:
  """A job-array script: array index i runs jobs[i], its output appended to its train.log."""
  sweep_dir = os.path.abspath(sweep_dir)
  array = f"0-{len(jobs) - 1}" + (f"%{max_running}" if max_running else "")
  lines = [
      "#!/bin/bash",
      f"# {len(jobs)} runs of a launch.sweep sweep; submit with: sbatch "
      f"{os.path.join(sweep_dir, SCRIPT_NAME)}",
      f"#SBATCH --job-name={job_name}",
      f"#SBATCH --array={array}",
      f"#SBATCH --output={os.path.join(sweep_dir, 'slurm', '%A_%a.out')}",
      *(f"#SBATCH {option}" for option in sbatch_options),
      "set -euo pipefail",
      f"cd {shlex.quote(os.path.abspath(cwd or os.getcwd()))}",
      'case "$SLURM_ARRAY_TASK_ID" in',
  ]
  for index, job in enumerate(jobs):
    lines += [
        f"  {index})  # {job.name}",
        f"    mkdir -p {shlex.quote(job.workdir)}",
        f"    {shlex.join(job.command)} >> {shlex.quote(job.log)} 2>&1 ;;",
    ]
  lines += [
      '  *) echo "no run for array index $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;',
      "esac",
  ]
  return "\n".join(lines) + "\n"


def write_slurm_script(script: str, sweep_dir: str) -> str:
  # Slurm does not create the --output directory; a missing one loses the job's output.
  os.makedirs(os.path.join(sweep_dir, "slurm"), exist_ok=True)
  path = os.path.join(os.path.abspath(sweep_dir), SCRIPT_NAME)
  with open(path, "w") as f:
    f.write(script)
  return path


def submit(script_path: str, out=print) -> bool:
  """sbatch the script when sbatch is on PATH; otherwise say how. True if submitted."""
  sbatch = shutil.which("sbatch")
  if sbatch is None:
    out(f"sbatch not found on PATH; on the cluster, submit with: sbatch {script_path}")
    return False
  result = subprocess.run([sbatch, script_path], capture_output=True, text=True)
  if result.returncode != 0:
    raise UserError(f"sbatch {script_path} failed (exit {result.returncode}): "
                    f"{(result.stderr or result.stdout).strip()}")
  out(result.stdout.strip())
  return True
