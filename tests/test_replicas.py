"""--vmap_seeds / --vmap_learning_rates: N replicas in one program equal N separate runs."""

import os
import shutil

import numpy as np
import pytest

from nets.trainer import ReplicaBest, train_and_evaluate
from tests.conftest import tiny_config


def test_vmapped_seeds_equal_separate_runs(tmp_path, keyword_files):
  train, test = keyword_files
  kw = dict(split_seed=0, num_epochs=2, optimizer="adadelta", learning_rate=1.0)
  together = train_and_evaluate(tiny_config(tmp_path / "vmap", train, test, seed=3,
                                            vmap_seeds=4, **kw))
  assert [r["seed"] for r in together["replicas"]] == [3, 4, 5, 6]
  for replica in together["replicas"]:
    alone = train_and_evaluate(tiny_config(tmp_path / f"s{replica['seed']}", train, test,
                                           seed=replica["seed"], **kw))
    assert replica["best_step"] == alone["best_step"]
    for key in ("valid/accuracy", "test/accuracy", "test/loss"):
      assert replica[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-5), key
    for key, value in alone["final"].items():
      assert replica["final"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
  accs = [r["test/accuracy"] for r in together["replicas"]]
  assert together["test/accuracy"] == pytest.approx(np.mean(accs))
  assert together["test/accuracy_std"] == pytest.approx(np.std(accs))


def test_vmapped_learning_rates_equal_separate_runs(tmp_path, keyword_files):
  train, test = keyword_files
  together = train_and_evaluate(tiny_config(tmp_path / "vmap", train, test, num_epochs=1,
                                            optimizer="adam", vmap_learning_rates=(0.003, 0.03)))
  for replica in together["replicas"]:
    lr = replica["learning_rate"]
    alone = train_and_evaluate(tiny_config(tmp_path / f"lr{lr}", train, test, num_epochs=1,
                                           optimizer="adam", learning_rate=lr))
    for key, value in alone["final"].items():
      assert replica["final"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_vmapped_seeds_with_several_steps_per_dispatch(tmp_path, keyword_files):
  """Chunks of [K, R, B, ...] batches (tokens padded on their last axis) train the same."""
  train, test = keyword_files
  kw = dict(num_epochs=1, max_steps=6, optimizer="adadelta", learning_rate=1.0,
            vmap_seeds=2)
  one = train_and_evaluate(tiny_config(tmp_path / "one", train, test, **kw))
  three = train_and_evaluate(tiny_config(tmp_path / "three", train, test,
                                         steps_per_dispatch=3, **kw))
  for a, b in zip(one["replicas"], three["replicas"]):
    for key, value in a["final"].items():
      assert b["final"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_a_replica_without_a_finite_validation_metric_is_left_out_of_the_means(tmp_path):
  """Unless the run has no validation at all (a refit): then every replica reports its
  final metrics."""
  best = ReplicaBest(str(tmp_path / "replicas.json"), [(0, 1.0), (1, 1.0)],
                     "valid/accuracy", "max")
  best.update(10, {"valid/accuracy": np.array([0.8, np.nan]),
                   "test/accuracy": np.array([0.7, 0.5])})
  final = {"test/accuracy": np.array([0.75, 0.5])}
  selected = best.summary(final)
  assert selected["test/accuracy"] == pytest.approx(0.7)
  assert "test/accuracy" not in selected["replicas"][1]
  assert ReplicaBest(str(tmp_path / "none.json"), [(0, 1.0), (1, 1.0)], "valid/accuracy",
                     "max").summary(final, unvalidated_step=20)["test/accuracy"] == 0.625


def test_replicas_resume_from_a_checkpoint_saved_before_any_evaluation(tmp_path,
                                                                       keyword_files):
  """--checkpoint_every below --eval_every: a run killed after its first checkpoint has
  no replicas.json yet; resuming it used to fail on the missing per-replica bests."""
  train, test = keyword_files
  cfg = tiny_config(tmp_path / "wd", train, test, vmap_seeds=2, checkpoint_every=2,
                    eval_every=100)
  train_and_evaluate(cfg.replace(max_steps=2))
  wd = tmp_path / "wd"  # as if killed at step 3: only the step-2 checkpoint is written
  os.remove(wd / "replicas.json")
  os.remove(wd / "summary.json")
  shutil.rmtree(wd / "best")
  summary = train_and_evaluate(cfg)
  assert summary["resumed_from"] == 2
  assert all(r["best_step"] == summary["steps"] for r in summary["replicas"])
