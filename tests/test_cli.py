"""The command line: one-line errors, help for every flag, kill -9 and resume, evaluate."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.conftest import REPO, cli_env, write_keyword_dataset


def run(module, *args, timeout=300, **env_extra):
  env = cli_env(**env_extra)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def tiny_flags(tmp_path, train, test=None, **extra):
  flags = dict(model="textcnn", train_file=train, workdir=tmp_path / "wd", embed_dim=8,
               filter_widths="2,3", num_filters=4, batch_size=8, num_epochs=2,
               optimizer="adam", learning_rate=0.01, progress="false", tensorboard="false")
  if test:
    flags["test_file"] = test
  flags.update(extra)
  return [f"--{k}={v}" for k, v in flags.items()]


@pytest.mark.parametrize("flag,message", [
    ("--optimizer=nope", "error: --optimizer=nope: must be one of sgd, momentum, adagrad"),
    ("--batch_size=0", "error: --batch_size=0: must be >= 1"),
    ("--filter_widths=3,x", "error: --filter_widths=3,x: must be comma-separated integers"),
    ("--conv=circular", "error: --conv=circular: must be one of narrow, wide"),
    ("--embedding_mode=static", "error: --embedding_mode=static needs --embeddings=PATH"),
    ("--model=transformer", "error: --model=transformer: must be one of textcnn"),
    ("--train_file=/no/such/file.txt", "train file not found: /no/such/file.txt"),
    ("--batch_size=abc", "error: flag --batch_size=abc: invalid literal for int()"),
    ("--no_such_flag=1", "error: Unknown command line flag 'no_such_flag'"),
    ("--compilation_cache_dir=/dev/null/cache", "error: --compilation_cache_dir=/dev/null/"
     "cache: cannot create it"),
    ("--steps_per_dispatch=0", "error: --steps_per_dispatch=0: must be >= 1"),
])
def test_bad_flag_values_give_one_line_errors(tmp_path, flag, message):
  train = write_keyword_dataset(tmp_path / "train.txt", 16, seed=0)
  args = [a for a in tiny_flags(tmp_path, train) if not a.startswith(flag.split("=")[0] + "=")]
  result = run("experiments.train", *args, flag)
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  error_lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(error_lines) == 1 and message in error_lines[0], result.stderr


@pytest.mark.parametrize("entry_point", ["train", "evaluate", "bench", "plot", "sample",
                                         "translate"])
def test_every_flag_has_help_text(entry_point):
  """Each entry point's own flags (in a fresh interpreter, as a user runs it)."""
  check = f"""
import sys
from absl import flags
import experiments.{entry_point} as module
own = [f for name, fs in flags.FLAGS.flags_by_module_dict().items()
       if name.startswith("experiments.") for f in fs]
assert own, "no flags found"
short = [f.name for f in own if len(f.help or "") <= 15]
print(len(own), "flags; short help:", short)
sys.exit(1 if short else 0)
"""
  result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr[-1000:]

def test_a_second_run_reuses_the_persistent_compilation_cache(tmp_path):
  """The first run stores its programs; a rerun with another workdir loads them and
  trains to the same parameters."""
  train = write_keyword_dataset(tmp_path / "train.txt", 32, seed=0)
  cache = tmp_path / "cache"
  env = dict(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # tiny programs count too
  first = run("experiments.train", *tiny_flags(tmp_path / "a", train),
              f"--compilation_cache_dir={cache}", **env)
  assert first.returncode == 0, first.stderr[-2000:]
  entries = set(os.listdir(cache))
  assert any(e.startswith("jit_train_step") for e in entries), entries
  second = run("experiments.train", *tiny_flags(tmp_path / "b", train),
               f"--compilation_cache_dir={cache}", **env)
  assert second.returncode == 0, second.stderr[-2000:]
  assert set(os.listdir(cache)) == entries  # every program came from the cache
  runs = [json.loads((tmp_path / d / "wd" / "summary.json").read_text()) for d in "ab"]
  assert runs[0]["final"] == runs[1]["final"]


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
  """SIGKILL mid-run, rerun the same command: same final params as an unkilled run."""
  train = write_keyword_dataset(tmp_path / "train.txt", 96, seed=0)
  common = dict(num_epochs=150, checkpoint_every=25, eval_every=600)
  reference = tiny_flags(tmp_path / "ref", train, **common)
  assert run("experiments.train", *reference).returncode == 0
  args = tiny_flags(tmp_path / "killed", train, **common)
  env = cli_env()
  proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=REPO,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = tmp_path / "killed" / "wd" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if ckpt_dir.exists() else []
    if steps and max(steps) >= 100:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "training finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (tmp_path / "killed" / "wd" / "summary.json").exists()
  result = run("experiments.train", *args)
  assert result.returncode == 0, result.stderr
  assert "resuming from step" in result.stdout
  summaries = [json.loads((tmp_path / d / "wd" / "summary.json").read_text())
               for d in ("ref", "killed")]
  total = summaries[0]["steps"]
  assert summaries[1]["steps"] == total
  assert summaries[1]["resumed_from"] > 0
  for key in ("test/accuracy", "test/loss", "valid/loss"):
    assert summaries[0]["final"][key] == summaries[1]["final"][key]
  # Bitwise: the final checkpoints hold identical parameters.
  import orbax.checkpoint as ocp
  restored = []
  for d in ("ref", "killed"):
    with ocp.CheckpointManager(str(tmp_path / d / "wd" / "checkpoints")) as m:
      restored.append(m.restore(total, args=ocp.args.StandardRestore())["params"])
  jax.tree.map(np.testing.assert_array_equal, *restored)


def test_evaluate_a_run_of_replicas_and_its_refit(tmp_path):
  """--vmap_seeds runs: the best/ checkpoint (chosen on the replicas' mean) evaluated for
  every replica, their mean as the headline. Its --refit stage, trained without
  validation, has no best/: the latest checkpoint is evaluated, and says so."""
  train = write_keyword_dataset(tmp_path / "train.txt", 96, seed=0)
  unseen = write_keyword_dataset(tmp_path / "unseen.txt", 30, seed=7)
  trained = run("experiments.train", *tiny_flags(tmp_path, train, vmap_seeds=2, refit=True))
  assert trained.returncode == 0, trained.stderr
  assert "'refit/test/accuracy'" in trained.stdout.splitlines()[-1]
  for workdir, checkpoint in ((tmp_path / "wd", "best"), (tmp_path / "wd" / "refit", "latest")):
    result = run("experiments.evaluate", f"--workdir={workdir}", f"--test_file={unseen}")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(line["step"], int) and len(line["accuracy/replicas"]) == 2
    assert line["accuracy"] == pytest.approx(np.mean(line["accuracy/replicas"]))
    assert line["checkpoint"] == checkpoint


def test_evaluate_on_a_file_the_run_never_saw(tmp_path):
  train = write_keyword_dataset(tmp_path / "train.txt", 96, seed=0)
  unseen = write_keyword_dataset(tmp_path / "unseen.txt", 30, seed=7)
  assert run("experiments.train", *tiny_flags(tmp_path, train, num_epochs=6)).returncode == 0
  result = run("experiments.evaluate", f"--workdir={tmp_path / 'wd'}",
               f"--test_file={unseen}")
  assert result.returncode == 0, result.stderr
  line = json.loads(result.stdout.strip().splitlines()[-1])
  assert line["examples"] == 30 and line["accuracy"] > 0.8 and "loss" in line
  missing = run("experiments.evaluate", f"--workdir={tmp_path / 'wd'}",
                "--test_file=/no/such.txt")
  assert missing.returncode == 2 and "Traceback" not in missing.stderr
  assert "test file not found" in missing.stderr
