"""launch/: sweep files expand into named runs; runners skip, resume, pin GPUs, write
Slurm arrays; summarize ranks runs. One real 2x2 text-CNN sweep end to end."""

import csv
import json
import os
import shlex
import subprocess
import sys

import pytest

from launch import runners, spec, summarize
from tests.conftest import REPO, cli_env, write_keyword_dataset


def cli(module, *args, timeout=120, **env_vars):
  env = cli_env(**env_vars)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def write_sweep(path, sweep):
  path.write_text(f"SWEEP = {sweep!r}\n")
  return str(path)


# --- expansion and names ---------------------------------------------------------------------

def test_product_is_every_combination_last_flag_fastest():
  runs = spec.expand({"base": {"model": "textcnn"},
                      "product": {"learning_rate": [0.5, 1.0], "dropout": [0.1, 0.3, 0.5]}})
  assert len(runs) == 6
  assert [r.name for r in runs[:3]] == ["learning_rate=0.5,dropout=0.1",
                                        "learning_rate=0.5,dropout=0.3",
                                        "learning_rate=0.5,dropout=0.5"]
  assert runs[-1].flags == {"model": "textcnn", "learning_rate": 1.0, "dropout": 0.5}


def test_zip_walks_lists_together_and_multiplies_the_product():
  runs = spec.expand({"product": {"dropout": [0.3, 0.5]},
                      "zip": {"seed": [0, 1, 2], "num_filters": [4, 8, 16]}})
  assert len(runs) == 2 * 3
  assert runs[1].name == "dropout=0.3,seed=1,num_filters=8"
  assert {(r.flags["seed"], r.flags["num_filters"]) for r in runs} == {(0, 4), (1, 8), (2, 16)}
  assert len(spec.expand({"zip": {"seed": [0, 1]}})) == 2
  assert [r.name for r in spec.expand({"base": {"seed": 3}})] == ["run"]


def test_a_list_of_sweeps_concatenates_their_runs():
  runs = spec.expand([{"product": {"dropout": [0.3, 0.5]}},
                      {"base": {"optimizer": "adam"}, "product": {"learning_rate": [0.01]}}])
  assert [r.name for r in runs] == ["dropout=0.3", "dropout=0.5", "learning_rate=0.01"]


@pytest.mark.parametrize("sweep,message", [
    ({"zip": {"seed": [0, 1], "dropout": [0.1, 0.2, 0.3]}},
     "SWEEP['zip'] lists differ in length: seed has 2, dropout has 3"),
    ({"product": {"dropout": 0.5}}, "SWEEP['product']['dropout'] must be a non-empty list"),
    ({"product": {"dropout": []}}, "SWEEP['product']['dropout'] must be a non-empty list"),
    ({"base": {"seed": 0}, "product": {"seed": [1, 2]}},
     "--seed is in both SWEEP['base'] and SWEEP['product']"),
    ({"base": {"workdir": "x"}}, "sets --workdir: the launcher gives each run its workdir"),
    ({"grid": {"seed": [1]}}, "SWEEP has unknown key(s) grid"),
    ({"product": {"seed": [1, 1]}}, "two runs share the workdir name 'seed=1'"),
    ([], "SWEEP is an empty list"),
    ("lr=1", "SWEEP must be a dict"),
])
def test_malformed_sweeps_give_one_line_errors(sweep, message):
  with pytest.raises(spec.SweepError) as e:
    spec.expand(sweep)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_workdir_names_are_stable_and_filesystem_safe():
  assert spec.workdir_name({"learning_rate": 0.5, "dropout": 0.3}) == \
      "learning_rate=0.5,dropout=0.3"
  assert spec.workdir_name({"filter_widths": [3, 4, 5]}) == "filter_widths=3-4-5"
  assert spec.workdir_name({"filter_widths": "3,4,5"}) == "filter_widths=3-4-5"
  assert spec.workdir_name({"bucket_by_length": False}) == "bucket_by_length=false"
  assert spec.workdir_name({"dataset": "tfds:glue/sst2", "embeddings": "/a b/v.bin"}) == \
      "dataset=tfds_glue_sst2,embeddings=_a_b_v.bin"
  assert spec.workdir_name({}) == "run"
  long = {"train_file": "/data/" + "x" * 300 + ".txt"}
  name = spec.workdir_name(long)
  assert len(name) <= spec.MAX_NAME_CHARS and name == spec.workdir_name(dict(long))
  assert name != spec.workdir_name({"train_file": "/data/" + "x" * 301 + ".txt"})


def test_flag_values_are_written_as_experiments_train_reads_them():
  assert spec.flag_args({"filter_widths": [3, 4], "progress": False, "lr": 0.5}) == \
      ["--filter_widths=3,4", "--progress=false", "--lr=0.5"]


def test_python_and_yaml_sweep_files_load(tmp_path):
  assert spec.load_sweep_file(write_sweep(tmp_path / "s.py", {"base": {"seed": 1}})) == \
      {"base": {"seed": 1}}
  (tmp_path / "empty.py").write_text("X = 1\n")
  with pytest.raises(spec.SweepError, match="defines no SWEEP"):
    spec.load_sweep_file(str(tmp_path / "empty.py"))
  pytest.importorskip("yaml")
  (tmp_path / "s.yaml").write_text("product:\n  dropout: [0.3, 0.5]\n")
  assert len(spec.expand(spec.load_sweep_file(str(tmp_path / "s.yaml")))) == 2


def test_the_example_sweep_expands_to_known_flags():
  runs = spec.expand(spec.load_sweep_file(str(REPO / "launch/sweeps/textcnn_sst2.py")))
  assert len(runs) == 4
  assert spec.unknown_flags(runs, spec.train_flag_names()) == []
  assert spec.unknown_flags(runs + [spec.Run("x", {"lernrate": 1})],
                            spec.train_flag_names()) == ["lernrate"]


# --- runners ---------------------------------------------------------------------------------

def fake_workdirs(sweep_dir):
  """finished (summary.json), unfinished (config.json only), new (nothing)."""
  for name, files in [("seed=0", ["config.json", "summary.json"]),
                      ("seed=1", ["config.json"])]:
    os.makedirs(sweep_dir / name)
    for f in files:
      (sweep_dir / name / f).write_text("{}")


def test_plan_marks_finished_unfinished_and_new_runs(tmp_path):
  fake_workdirs(tmp_path)
  jobs = runners.plan(spec.expand({"product": {"seed": [0, 1, 2]}}), str(tmp_path))
  assert [j.status for j in jobs] == [runners.FINISHED, runners.UNFINISHED, runners.NEW]
  assert jobs[2].workdir == str(tmp_path / "seed=2")
  assert jobs[2].command == [sys.executable, "-m", "experiments.train", "--seed=2",
                             f"--workdir={tmp_path / 'seed=2'}"]


def fake_job(tmp_path, name, code, status=runners.NEW):
  """A job whose command is a tiny Python program instead of a training run."""
  return runners.Job(name, str(tmp_path / name), [sys.executable, "-c", code], status)


def test_local_runner_skips_finished_resumes_unfinished_and_survives_failures(tmp_path):
  record = "import os; open(os.environ['MARK'] + '-' + {!r}, 'w').close()"
  jobs = [fake_job(tmp_path, "done", record.format("done"), runners.FINISHED),
          fake_job(tmp_path, "half", record.format("half"), runners.UNFINISHED),
          fake_job(tmp_path, "bad", "import sys; print('step 1'); "
                   "print('error: --optimizer=nope: must be one of sgd'); sys.exit(2)"),
          fake_job(tmp_path, "new", record.format("new"))]
  lines = []
  tally = runners.run_local(jobs, out=lines.append, poll_s=0.01,
                            env=dict(os.environ, MARK=str(tmp_path / "ran")))
  assert sorted(p.name for p in tmp_path.glob("ran-*")) == ["ran-half", "ran-new"]
  assert tally.finished == ["half", "new"] and tally.skipped == ["done"]
  assert tally.failed == ["bad"]
  assert lines[0].startswith("[1/4] skipped  done")
  assert any(l.startswith("[2/4] started  half (resuming") for l in lines)
  failed = [l for l in lines if "FAILED" in l]
  assert len(failed) == 1 and "exit 2" in failed[0]
  assert "error: --optimizer=nope: must be one of sgd" in failed[0]
  assert tally.line() == "4 runs: 2 finished, 1 skipped (already finished), 1 failed: bad"
  assert "step 1" in (tmp_path / "bad" / runners.LOG_NAME).read_text()


def test_parallel_runs_get_one_gpu_each(tmp_path):
  code = ("import os, time; time.sleep(0.3); "
          "open('{}/' + os.environ['CUDA_VISIBLE_DEVICES'], 'a').write('x')")
  jobs = [fake_job(tmp_path, f"r{i}", code.format(tmp_path)) for i in range(4)]
  tally = runners.run_local(jobs, parallel=2, gpus=["0", "1"], out=lambda _: None,
                            poll_s=0.01)
  assert len(tally.finished) == 4
  assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["0", "1"]
  assert (tmp_path / "0").read_text() == (tmp_path / "1").read_text() == "xx"
  env, gpu = runners.gpu_env(2, ["0", "1"], 3, {})
  assert gpu == "0" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  assert runners.gpu_env(0, [], 2, {"A": "1"}) == ({"A": "1"}, "")


def test_detect_gpus_reads_cuda_visible_devices():
  assert runners.detect_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
  assert runners.detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
  assert runners.detect_gpus({"PATH": ""}) == []


def test_slurm_script_is_a_job_array_of_the_runs(tmp_path):
  jobs = runners.plan(spec.expand({"base": {"model": "textcnn"},
                                   "product": {"learning_rate": [0.5, 1.0],
                                               "dropout": [0.3, 0.5]}}), str(tmp_path))
  script = runners.slurm_script(jobs, str(tmp_path), "tcnn", max_running=2,
                                sbatch_options=["--gres=gpu:1"], cwd="/repo")
  lines = script.splitlines()
  assert lines[0] == "#!/bin/bash"
  assert "#SBATCH --array=0-3%2" in lines and "#SBATCH --job-name=tcnn" in lines
  assert "#SBATCH --gres=gpu:1" in lines and "cd /repo" in lines
  assert f"#SBATCH --output={tmp_path}/slurm/%A_%a.out" in lines
  for index, job in enumerate(jobs):
    case = lines.index(f"  {index})  # {job.name}")
    command = shlex.split(lines[case + 2].removesuffix(" ;;"))
    assert command == job.command + [">>", job.log, "2>&1"]
  assert "#SBATCH --array=0-3" in runners.slurm_script(jobs, str(tmp_path), "t").splitlines()
  subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid bash


def test_sbatch_is_called_only_when_on_path(tmp_path, monkeypatch):
  script = runners.write_slurm_script("#!/bin/bash\n", str(tmp_path))
  assert (tmp_path / "slurm").is_dir()
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  said = []
  assert runners.submit(script, out=said.append) is False
  assert said == [f"sbatch not found on PATH; on the cluster, submit with: sbatch {script}"]
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/called\n"
                                  "echo Submitted batch job 42\n")
  (bin_dir / "sbatch").chmod(0o755)
  monkeypatch.setenv("PATH", str(bin_dir))
  said = []
  assert runners.submit(script, out=said.append) is True
  assert (tmp_path / "called").read_text().strip() == script
  assert said == ["Submitted batch job 42"]


def test_print_runner_prints_one_command_per_run(tmp_path):
  sweep = write_sweep(tmp_path / "s.py", {"base": {"model": "textcnn"},
                                          "product": {"seed": [0, 1]}})
  result = cli("launch.sweep", sweep, "--runner=print", f"--sweep_dir={tmp_path / 'sw'}")
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      shlex.join([sys.executable, "-m", "experiments.train", "--model=textcnn",
                  f"--seed={seed}", f"--workdir={tmp_path / 'sw' / f'seed={seed}'}"])
      for seed in (0, 1)]
  assert not (tmp_path / "sw").exists()  # printing writes nothing


def test_slurm_runner_without_sbatch_writes_the_script_and_says_how(tmp_path):
  sweep = write_sweep(tmp_path / "s.py", {"product": {"seed": [0, 1, 2]}})
  fake_workdirs(tmp_path / "sw")
  result = cli("launch.sweep", sweep, "--runner=slurm", f"--sweep_dir={tmp_path / 'sw'}",
               PATH=os.path.dirname(sys.executable))  # no sbatch there
  assert result.returncode == 0, result.stderr
  script = (tmp_path / "sw" / runners.SCRIPT_NAME).read_text()
  assert "#SBATCH --array=0-1" in script.splitlines()  # the finished run is left out
  assert "skipped  seed=0" in result.stdout and "sbatch not found on PATH" in result.stdout


@pytest.mark.parametrize("args,message", [
    ([], "error: give exactly one sweep file"),
    (["/no/such/sweep.py"], "error: sweep file not found: /no/such/sweep.py"),
    (["SWEEP", "--runner=cloud"], "error: flag --runner=cloud: value should be one of"),
    (["SWEEP", "--parallel=0"], "error: flag --parallel=0: 0 is not a positive integer"),
    (["BAD"], "error: BAD: unknown flag(s) lernrate"),
])
def test_bad_sweep_arguments_give_one_line_errors(tmp_path, args, message):
  files = {"SWEEP": write_sweep(tmp_path / "s.py", {"base": {"seed": 0}}),
           "BAD": write_sweep(tmp_path / "bad.py", {"base": {"lernrate": 1}})}
  args = [files.get(a, a) for a in args]
  message = message.replace("BAD", files["BAD"])
  result = cli("launch.sweep", *args)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines() == [result.stderr.strip()]
  assert message in result.stderr, result.stderr


# --- summarize -------------------------------------------------------------------------------

def fake_run(sweep_dir, name, config, summary=None):
  os.makedirs(sweep_dir / name)
  base = {"model": "textcnn", "seed": 0, "workdir": str(sweep_dir / name),
          "model_config": {"dropout": 0.5, "filter_widths": [3, 4, 5]}}
  base["model_config"].update(config.pop("model_config", {}))
  (sweep_dir / name / "config.json").write_text(json.dumps(base | config))
  if summary is not None:
    (sweep_dir / name / "summary.json").write_text(json.dumps(summary))


def test_summarize_ranks_best_first_and_shows_varying_flags(tmp_path):
  fake_run(tmp_path, "seed=0", {}, {"test/accuracy": 0.7, "test/loss": 0.5, "steps": 10})
  fake_run(tmp_path, "seed=1", {"seed": 1}, {"test/accuracy": 0.9, "test/loss": 0.6,
                                             "steps": 10})
  fake_run(tmp_path, "seed=2", {"seed": 2, "model_config": {"dropout": 0.3}},
           {"valid/accuracy": 0.8, "steps": 10})
  fake_run(tmp_path, "seed=3", {"seed": 3})  # unfinished
  os.makedirs(tmp_path / "slurm")
  rows, unfinished = summarize.collect(str(tmp_path))
  assert unfinished == ["seed=3"] and len(rows) == 3
  header, body = summarize.table(rows, "test/accuracy", "max")
  assert header == ["run", "seed", "dropout", "test/accuracy", "test/loss",
                    "valid/accuracy", "steps"]
  assert [r[0] for r in body] == ["seed=1", "seed=0", "seed=2"]  # no metric: last
  _, by_loss = summarize.table(rows, "test/loss", summarize.metric_mode("test/loss"))
  assert [r[0] for r in by_loss] == ["seed=0", "seed=1", "seed=2"]
  text = summarize.format_table(header, body).splitlines()
  assert text[0].split() == header and len({len(l) for l in text[:2]}) == 1
  assert text[2].split() == ["seed=1", "1", "0.5", "0.9000", "0.6000", "-", "10"]


def test_metric_mode_is_min_for_losses_and_max_otherwise():
  assert summarize.metric_mode("test/loss") == "min"
  assert summarize.metric_mode("valid/error_rate") == "min"
  assert summarize.metric_mode("test/accuracy") == "max"


def test_summarize_cli_shows_cv_std_and_writes_csv(tmp_path):
  for name, acc, std in [("lr=0.5", 0.80, 0.02), ("lr=1.0", 0.82, 0.01)]:
    fake_run(tmp_path, name, {"learning_rate": float(name[3:])},
             {"folds": 10, "test/accuracy": acc, "test/accuracy_std": std,
              "per_fold": [{"test/accuracy": acc}]})
  result = cli("launch.summarize", str(tmp_path))
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[1].split() == ["run", "learning_rate", "test/accuracy", "test/accuracy_std",
                              "folds"]
  assert lines[3].split() == ["lr=1.0", "1.0", "0.8200", "0.0100", "10"]
  with open(tmp_path / "summary.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["run"] for r in table] == ["lr=1.0", "lr=0.5"]
  assert float(table[1]["test/accuracy_std"]) == 0.02
  missing = cli("launch.summarize", str(tmp_path), "--metric=test/f1")
  assert missing.returncode == 2
  assert missing.stderr.startswith("error: --metric=test/f1: no run has it; try one of "
                                   "test/accuracy")


# --- end to end ------------------------------------------------------------------------------

def test_a_2x2_text_cnn_sweep_runs_locally_and_summarizes(tmp_path):
  train = write_keyword_dataset(tmp_path / "train.txt", 64, seed=0)
  test = write_keyword_dataset(tmp_path / "test.txt", 24, seed=1)
  sweep = write_sweep(tmp_path / "tiny.py", {
      "base": {"model": "textcnn", "train_file": str(train), "test_file": str(test),
               "embed_dim": 8, "filter_widths": [2, 3], "num_filters": 4, "batch_size": 8,
               "num_epochs": 1, "optimizer": "adam", "progress": False,
               "tensorboard": False},
      "product": {"learning_rate": [0.01, 0.05], "dropout": [0.3, 0.5]}})
  sweep_dir = tmp_path / "sweep"
  # Compilation dominates a tiny run; the runs share most programs through JAX's cache.
  cache = dict(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  result = cli("launch.sweep", sweep, "--runner=local", "--parallel=2",
               f"--sweep_dir={sweep_dir}", timeout=300, **cache)
  assert result.returncode == 0, result.stdout + result.stderr
  names = ["learning_rate=0.01,dropout=0.3", "learning_rate=0.01,dropout=0.5",
           "learning_rate=0.05,dropout=0.3", "learning_rate=0.05,dropout=0.5"]
  assert sorted(os.listdir(sweep_dir)) == names
  assert all((sweep_dir / n / "summary.json").exists() for n in names)
  assert result.stdout.count("finished learning_rate=") == 4
  assert result.stdout.splitlines()[-1] == \
      "4 runs: 4 finished, 0 skipped (already finished), 0 failed"

  again = cli("launch.sweep", sweep, "--runner=local", f"--sweep_dir={sweep_dir}")
  assert again.returncode == 0
  assert again.stdout.splitlines()[-1] == \
      "4 runs: 0 finished, 4 skipped (already finished), 0 failed"

  summary = cli("launch.summarize", str(sweep_dir))
  assert summary.returncode == 0, summary.stderr
  assert summary.stdout.splitlines()[1].split()[:4] == \
      ["run", "learning_rate", "dropout", "test/accuracy"]
  with open(sweep_dir / "summary.csv") as f:
    table = list(csv.DictReader(f))
  assert sorted(r["run"] for r in table) == names
  accuracies = [float(r["test/accuracy"]) for r in table]
  assert accuracies == sorted(accuracies, reverse=True)
  assert accuracies[0] == max(json.loads((sweep_dir / n / "summary.json").read_text())
                              ["test/accuracy"] for n in names)
