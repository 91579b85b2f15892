"""Data parallelism: N simulated devices and 2 real processes train like 1 device."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, cli_env, write_keyword_dataset


def train(tmp_path, workdir, devices=1, extra=(), env_extra=None, wait=True):
  train_file = tmp_path / "train.txt"
  if not train_file.exists():
    write_keyword_dataset(train_file, 96, seed=0)
    write_keyword_dataset(tmp_path / "test.txt", 40, seed=1)
  args = [sys.executable, "-m", "experiments.train", "--model=textcnn",
          f"--train_file={train_file}", f"--test_file={tmp_path / 'test.txt'}",
          "--embed_dim=8", "--filter_widths=2,3", "--num_filters=4", "--batch_size=8",
          "--num_epochs=2", "--optimizer=adam", "--learning_rate=0.01", "--log_every=1",
          "--progress=false", "--tensorboard=false", f"--workdir={workdir}", *extra]
  env = cli_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                **(env_extra or {}))
  if not wait:
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return result


def train_losses(workdir):
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return np.array([l["train/loss"] for l in lines if "train/loss" in l])


def test_eight_devices_follow_the_one_device_loss_curve(tmp_path):
  one = train(tmp_path, tmp_path / "one", devices=1)
  eight = train(tmp_path, tmp_path / "eight", devices=8)
  assert "8 cpu device(s)" in eight.stderr and "1 cpu device(s)" in one.stderr
  np.testing.assert_allclose(train_losses(tmp_path / "eight"), train_losses(tmp_path / "one"),
                             rtol=1e-5)


def test_checkpoint_from_eight_devices_resumes_on_one(tmp_path):
  train(tmp_path, tmp_path / "wd", devices=8, extra=["--num_epochs=1"])
  resumed = train(tmp_path, tmp_path / "wd", devices=1)
  assert "resuming from step" in resumed.stdout
  reference = train(tmp_path, tmp_path / "ref", devices=1)
  del reference
  np.testing.assert_allclose(train_losses(tmp_path / "wd"), train_losses(tmp_path / "ref"),
                             rtol=1e-5)


def test_batch_size_must_divide_by_the_devices(tmp_path):
  args_env = cli_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
  write_keyword_dataset(tmp_path / "t.txt", 40, seed=0)
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--train_file={tmp_path / 't.txt'}",
       "--batch_size=12", "--embed_dim=8", f"--workdir={tmp_path / 'wd'}",
       "--progress=false"], cwd=REPO, env=args_env, capture_output=True, text=True)
  assert result.returncode == 2
  assert "error: --batch_size=12: must divide by the 8 devices" in result.stderr


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("dispatch", [[], ["--steps_per_dispatch=2", "--log_every=2"]])
def test_two_processes_train_in_lockstep_like_one_process(tmp_path, dispatch):
  """jax.distributed over 127.0.0.1 with CPU (gloo) collectives, 1 device per process;
  also with 2 steps per call (each process feeds its rows of a [2, B, ...] chunk)."""
  port = _free_port()
  procs = [train(tmp_path, tmp_path / "multi", devices=1, wait=False, extra=[
      "--multihost", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
      f"--process_id={i}", *dispatch]) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outputs
  assert all("process 1/2" in o or "process 2/2" in o for o in outputs)
  # same global batch, 2 devices, one step per call
  train(tmp_path, tmp_path / "single", devices=2, extra=dispatch[1:])
  np.testing.assert_allclose(train_losses(tmp_path / "multi"),
                             train_losses(tmp_path / "single"), rtol=1e-5)
  summaries = [json.load(open(tmp_path / d / "summary.json")) for d in ("multi", "single")]
  assert summaries[0]["final"] == pytest.approx(summaries[1]["final"], rel=1e-5)
