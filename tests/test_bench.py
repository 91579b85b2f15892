"""The benchmark command runs every case and prints one JSON line each."""

import json
import subprocess
import sys

import pytest

from experiments import bench
from tests.conftest import REPO, cli_env


def test_every_case_prints_one_json_line():
  result = subprocess.run(
      [sys.executable, "-m", "experiments.bench", "--case=all", "--steps=2", "--warmup=1"],
      # A smoke test of the command, not a measurement: skip XLA's optimisation passes.
      cwd=REPO, env=cli_env(),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
  assert [l["case"] for l in lines] == [c for c in bench.CASES if c in bench.CASE_BUILDERS]
  for line in lines:
    assert line["framework"] == "jax" and line["steps"] == 2
    assert line["throughput_median"] > 0 and line["first_step_s"] > 0
    assert line["unit"] in ("examples/s", "tokens/s", "target tokens/s", "sentences/s")


def test_unknown_case_is_a_one_line_error():
  result = subprocess.run([sys.executable, "-m", "experiments.bench", "--case=resnet"],
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 2 and result.stderr.startswith("error: --case=resnet")


@pytest.mark.parametrize("steps_per_dispatch", [1, 4])
def test_loop_steps_time_the_training_loop_beside_the_step(steps_per_dispatch):
  line = bench.bench("rnn_lm", steps=2, warmup=1, seed=0, loop_steps=20,
                     steps_per_dispatch=steps_per_dispatch)
  assert line["loop_throughput_median"] > 0 and line["loop_over_step"] > 0
  assert line["steps_per_dispatch"] == steps_per_dispatch


@pytest.mark.parametrize("flags", [["--loop_steps=5"], ["--steps_per_dispatch=0"],
                                   ["--loop_steps=20", "--steps_per_dispatch=8"]])
def test_bad_loop_flags_are_one_line_errors(flags):
  result = subprocess.run([sys.executable, "-m", "experiments.bench", "--case=rnn_lm",
                           *flags], cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 2 and result.stderr.startswith(f"error: {flags[0]}")
