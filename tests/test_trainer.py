"""The trainer's contract: every parameter learns, runs are reproducible and resumable."""

import dataclasses
import itertools
import json
import os

import jax
import numpy as np
import pytest

from nets import config as config_lib
from nets import embeddings
from nets import trainer as trainer_lib
from nets.checkpoint import Checkpoints
from nets.data import datasets, pipeline
from nets.errors import ConfigError
from nets.trainer import Trainer, dispatch_sizes, train_and_evaluate
from tests.conftest import assert_every_param_changed, tiny_config, write_keyword_dataset


def trainer_for(cfg):
  return Trainer(cfg, datasets.prepare(datasets.load_raw(cfg), cfg))


def final_params(workdir, cfg):
  trainer = trainer_for(cfg)
  ckpt = Checkpoints(str(workdir))
  state = ckpt.restore(trainer.abstract_state)
  ckpt.close()
  return jax.device_get(state.params), int(state.step)


@pytest.mark.parametrize("on_tie, selected", [("earlier", 1), ("later", 2)])
def test_a_validation_tie_selects_the_earlier_or_the_later_evaluation(tmp_path, on_tie,
                                                                      selected):
  """Kim's code takes the later epoch on a tie (`if val_perf >= best_val_perf`); the
  replicas' own bests follow the same rule as best/."""
  ckpt = Checkpoints(str(tmp_path), best_on_tie=on_tie)
  replicas = trainer_lib.ReplicaBest(str(tmp_path / "replicas.json"), [(0, 1.0)],
                                     "valid/accuracy", "max", on_tie)
  for step, acc in ((1, 0.8), (2, 0.8), (3, 0.7)):
    ckpt.save_if_best(step, {"w": np.full(2, step, np.float32)}, {"valid/accuracy": acc})
    replicas.update(step, {"valid/accuracy": np.array([acc])})
  assert ckpt.best_step == selected
  assert replicas.best[0]["best_step"] == selected
  restored = ckpt.restore({"w": jax.ShapeDtypeStruct((2,), np.float32)}, which="best")
  np.testing.assert_array_equal(restored["w"], [selected, selected])
  ckpt.close()


def test_textcnn_selects_as_kim_and_other_families_keep_the_first_best():
  from nets import convnet, textcnn
  assert textcnn.DEFAULTS["best_on_tie"] == "later"
  assert "best_on_tie" not in convnet.DEFAULTS
  assert config_lib.Config().best_on_tie == "earlier"


@pytest.mark.parametrize("sparse", [True, False])
def test_one_step_changes_every_parameter(tmp_path, keyword_files, sparse):
  train, test = keyword_files
  cfg = tiny_config(tmp_path, train, test, optimizer="adadelta", learning_rate=1.0,
                    sparse_updates=sparse)
  trainer = trainer_for(cfg)
  state = trainer.initial_state()
  before = jax.device_get(state.params)
  state, metrics = trainer.train_step(state, next(trainer.batches(0)))
  after = jax.device_get(state.params)
  assert_every_param_changed(before, after)
  assert np.isfinite(float(metrics["loss"]))
  assert int(state.step) == 1


def test_kim_init_trains_the_output_layer_first_then_every_parameter(tmp_path, keyword_files):
  """With Kim's zero output layer nothing below it gets a gradient in the first step;
  from the second step on everything learns."""
  train, test = keyword_files
  cfg = tiny_config(tmp_path, train, test, optimizer="adadelta", learning_rate=1.0,
                    weight_init="kim")
  trainer = trainer_for(cfg)
  state = trainer.initial_state()
  batches = trainer.batches(0)
  init = jax.device_get(state.params)
  state, _ = trainer.train_step(state, next(batches))
  first = jax.device_get(state.params)
  assert_every_param_changed(init["output"], first["output"])
  for name in init.keys() - {"output"}:
    jax.tree.map(np.testing.assert_array_equal, init[name], first[name])
  state, _ = trainer.train_step(state, next(batches))
  assert_every_param_changed(init, jax.device_get(state.params))


@pytest.mark.parametrize("optimized", [False, True], ids=["fast-compile", "xla-optimized"])
def test_golden_loss(tmp_path, keyword_files, optimized, request):
  """Catches silent changes to init, data order, dropout rng or the step; also with XLA's
  optimisation passes, which the rest of the suite skips."""
  if optimized:
    request.getfixturevalue("xla_optimizations")
  train, test = keyword_files
  cfg = tiny_config(tmp_path, train, test)
  trainer = trainer_for(cfg)
  state = trainer.initial_state()
  batches = trainer.batches(0)
  losses = []
  for _ in range(10):
    state, m = trainer.train_step(state, next(batches))
    losses.append(float(m["loss"]))
  np.testing.assert_allclose(losses[0], GOLDEN_FIRST, rtol=1e-4)
  np.testing.assert_allclose(losses[-1], GOLDEN_TENTH, rtol=1e-3)


# Recorded with jax 0.10.2 / flax 0.12.8 on CPU.
GOLDEN_FIRST, GOLDEN_TENTH = 0.6285890936851501, 0.6243399381637573


def test_end_to_end_outputs_and_learning(tmp_path, keyword_files):
  train, test = keyword_files
  cfg = tiny_config(tmp_path / "run", train, test, num_epochs=6, tensorboard=True)
  summary = train_and_evaluate(cfg)
  wd = tmp_path / "run"
  assert config_lib.from_dict(json.loads((wd / "config.json").read_text())) == cfg
  records = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert all("step" in r and "epoch" in r for r in records)
  keys = set().union(*records)
  assert {"train/loss", "train/accuracy", "valid/accuracy", "test/accuracy",
          "train/examples_per_s"} <= keys
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd / "tensorboard"))
  assert os.listdir(wd / "checkpoints") and os.listdir(wd / "best")
  assert (wd / "vocab.txt").exists() and (wd / "data.json").exists()
  saved = json.loads((wd / "summary.json").read_text())
  assert saved["test/accuracy"] == summary["test/accuracy"]
  assert summary["selected_on"] == "valid/accuracy"
  assert summary["test/accuracy"] > 0.85  # the keyword task is easy


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path, keyword_files):
  train, test = keyword_files
  full = tiny_config(tmp_path / "full", train, test, checkpoint_every=3)
  train_and_evaluate(full)
  part = full.replace(workdir=str(tmp_path / "part"))
  train_and_evaluate(part.replace(max_steps=10))     # stops at step 10 (not a checkpoint
  summary = train_and_evaluate(part)                  # multiple: resumes from step 10)
  assert summary["resumed_from"] == 10
  p_full, step_full = final_params(tmp_path / "full", full)
  p_part, step_part = final_params(tmp_path / "part", part)
  assert step_full == step_part
  jax.tree.map(np.testing.assert_array_equal, p_full, p_part)  # bitwise
  lines = lambda d: [l for l in (d / "metrics.jsonl").read_text().splitlines()
                     if "train/loss" in l]
  loss_of = lambda l: (json.loads(l)["step"], json.loads(l)["train/loss"])
  assert list(map(loss_of, lines(tmp_path / "full"))) == list(map(loss_of, lines(tmp_path / "part")))


def test_dispatches_end_at_every_log_eval_and_checkpoint_step():
  """From step 3 to 30, 4 steps per dispatch, events every 5 and 12 steps: dispatches of
  4 where no event falls inside, single steps up to an event that 4 would overrun."""
  sizes = list(dispatch_sizes(3, 30, 4, (5, 12)))
  assert sizes == [1, 1, 4, 1, 1, 1, 1, 1, 1, 4, 1, 4, 1, 4, 1]
  ends = set(np.cumsum([3] + sizes))
  assert {5, 10, 12, 15, 20, 24, 25, 30} <= ends and max(ends) == 30
  assert list(dispatch_sizes(0, 8, 1, (5,))) == [1] * 8


def test_several_steps_per_dispatch_train_like_one_per_dispatch(tmp_path, keyword_files):
  """A scan over 4 batches per call, length buckets padded to the dispatch's longest, a
  log step (every 5) and the epoch's end (10 steps) not multiples of 4; interrupted at
  step 5 and resumed: the same losses and parameters as one step per call."""
  train, test = keyword_files
  one = tiny_config(tmp_path / "one", train, test, optimizer="adadelta", learning_rate=1.0,
                    num_epochs=1)
  final_one = train_and_evaluate(one)["final"]
  four = one.replace(workdir=str(tmp_path / "four"), steps_per_dispatch=4)
  assert Trainer(four, datasets.prepare(datasets.load_raw(four), four)).buckets
  train_and_evaluate(four.replace(max_steps=5))
  summary = train_and_evaluate(four)
  assert summary["resumed_from"] == 5
  p_one, step_one = final_params(tmp_path / "one", one)
  p_four, step_four = final_params(tmp_path / "four", four)
  assert step_one == step_four == 10
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               p_one, p_four)
  losses = lambda d: [(r["step"], r["train/loss"]) for r in map(
      json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]
  (steps_one, loss_one), (steps_four, loss_four) = (zip(*losses(tmp_path / d))
                                                    for d in ("one", "four"))
  assert steps_one == steps_four == (5, 10)
  np.testing.assert_allclose(loss_four, loss_one, rtol=1e-5)
  for k, v in final_one.items():
    assert summary["final"][k] == pytest.approx(v, rel=1e-5), k


def test_rerun_of_finished_run_keeps_results(tmp_path, keyword_files):
  train, test = keyword_files
  cfg = tiny_config(tmp_path, train, test)
  first = train_and_evaluate(cfg)
  again = train_and_evaluate(cfg)
  assert again == first


def test_a_different_config_in_the_same_workdir_is_refused(tmp_path, keyword_files):
  train, test = keyword_files
  cfg = tiny_config(tmp_path, train, test, max_steps=2)
  train_and_evaluate(cfg)
  with pytest.raises(ConfigError, match="differs in: learning_rate"):
    train_and_evaluate(cfg.replace(learning_rate=0.5))


def test_a_run_from_before_an_option_existed_resumes_with_its_default(tmp_path,
                                                                      keyword_files):
  """A config.json without a newer option (here best_on_tie) ran as that option's
  default: the same flags resume it, another value of the option is refused."""
  train, test = keyword_files
  cfg = tiny_config(tmp_path, train, test, max_steps=2)
  first = train_and_evaluate(cfg)
  path = tmp_path / "config.json"
  old = json.loads(path.read_text())
  del old["best_on_tie"]
  path.write_text(json.dumps(old))
  assert train_and_evaluate(cfg) == first
  with pytest.raises(ConfigError, match="differs in: best_on_tie"):
    train_and_evaluate(cfg.replace(best_on_tie="later"))


def test_cross_validation_reports_mean_and_std(tmp_path):
  train = write_keyword_dataset(tmp_path / "all.txt", 90, seed=3)
  cfg = tiny_config(tmp_path / "cv", train, cv_folds=3, num_epochs=2)
  summary = train_and_evaluate(cfg)
  assert summary["folds"] == 3 and len(summary["per_fold"]) == 3
  accs = [f["test/accuracy"] for f in summary["per_fold"]]
  assert summary["test/accuracy"] == pytest.approx(np.mean(accs))
  assert summary["test/accuracy_std"] == pytest.approx(np.std(accs))
  assert sorted(p for p in os.listdir(tmp_path / "cv") if p.startswith("fold")) == [
      "fold00", "fold01", "fold02"]


def test_refit_trains_on_train_and_valid_for_the_epochs_validation_selected(
    tmp_path, keyword_files):
  train, test = keyword_files
  cfg = tiny_config(tmp_path / "run", train, test, num_epochs=4, refit=True)
  plain = train_and_evaluate(cfg.replace(refit=False))
  summary = train_and_evaluate(cfg)  # --refit added to a finished run: the run is kept
  assert {k: summary[k] for k in plain} == plain
  wd = tmp_path / "run"
  data = datasets.prepare(datasets.load_raw(cfg), cfg)
  best_step = json.loads((wd / "best" / "best.json").read_text())["step"]
  epochs = best_step / Trainer(cfg, data).steps_per_epoch
  assert summary["refit"]["selected_step"] == best_step == plain["best_step"]
  assert summary["refit"]["epochs"] == epochs
  sizes = json.loads((wd / "refit" / "data.json").read_text())["sizes"]
  n = lambda split: pipeline.num_examples(getattr(data, split))
  assert sizes == {"train": n("train") + n("valid"), "test": n("test")}  # no validation
  refit = json.loads((wd / "refit" / "summary.json").read_text())
  assert refit["steps"] == summary["refit"]["steps"]
  assert refit["epochs"] == pytest.approx(epochs, abs=0.5 / refit["steps"] * refit["epochs"])
  assert summary["refit/test/accuracy"] == refit["test/accuracy"] == refit["final"][
      "test/accuracy"]  # its final model: nothing selected
  assert config_lib.from_dict(json.loads((wd / "refit" / "config.json").read_text())).refit is False
  again = train_and_evaluate(cfg.replace(log_every=7))  # a resumable change: both kept
  assert again == summary
  # A refit of another length (as when a longer run selects other epochs) starts over.
  stale = json.loads((wd / "refit" / "config.json").read_text())
  (wd / "refit" / "config.json").write_text(json.dumps({**stale, "max_steps": 1}))
  redone = train_and_evaluate(cfg)
  assert redone["refit"]["summary"]["resumed_from"] == 0
  assert redone["refit"]["summary"]["wall_time_s"] != summary["refit"]["summary"]["wall_time_s"]
  assert redone["refit/test/accuracy"] == summary["refit/test/accuracy"]


def test_refit_of_replicas_and_of_cross_validation_folds(tmp_path, keyword_files):
  train, test = keyword_files
  cfg = tiny_config(tmp_path / "vmap", train, test, num_epochs=2, vmap_seeds=2, refit=True)
  summary = train_and_evaluate(cfg)
  # The run's own summary has another name: summary.json (what sweeps take as finished)
  # comes last, after the refit.
  run_summary = json.loads((tmp_path / "vmap" / "run_summary.json").read_text())
  assert {k: summary[k] for k in run_summary} == run_summary
  replicas = summary["refit"]["summary"]["replicas"]
  assert [r["test/accuracy"] for r in replicas] == [r["final"]["test/accuracy"]
                                                   for r in replicas]
  assert summary["refit/test/accuracy"] == pytest.approx(
      np.mean([r["test/accuracy"] for r in replicas]))
  everything = write_keyword_dataset(tmp_path / "all.txt", 60, seed=3)
  cv = tiny_config(tmp_path / "cv", everything, cv_folds=2, num_epochs=1, refit=True)
  summary = train_and_evaluate(cv)
  folds = [f["refit/test/accuracy"] for f in summary["per_fold"]]
  assert summary["refit/test/accuracy"] == pytest.approx(np.mean(folds))
  assert os.path.exists(tmp_path / "cv" / "fold01" / "refit" / "summary.json")


@pytest.mark.parametrize("shuffle,valid,message", [
    (False, {"tokens": np.zeros((2, 3))}, "a stream"),
    (True, None, "needs training and validation splits"),
    (True, {"tokens": np.zeros((2, 5))}, "differ in tokens")])
def test_refit_refuses_data_it_cannot_merge(shuffle, valid, message):
  data = datasets.Data(train={"tokens": np.zeros((4, 3))}, valid=valid, test=None,
                       shuffle=shuffle)
  with pytest.raises(ConfigError, match=f"{message}.*: pass --refit=false"):
    trainer_lib._check_refit(data)


@pytest.mark.parametrize("loss", ["sigmoid_xent", "hinge"])
def test_other_losses_train(tmp_path, keyword_files, loss):
  train, test = keyword_files
  summary = train_and_evaluate(tiny_config(tmp_path, train, test, loss=loss, num_epochs=6))
  assert summary["test/accuracy"] > 0.8


def test_sigmoid_loss_needs_binary_data(tmp_path):
  train = write_keyword_dataset(tmp_path / "t.txt", 40, seed=0, num_classes=3)
  cfg = tiny_config(tmp_path, train, loss="sigmoid_xent")
  with pytest.raises(ConfigError, match="binary"):
    train_and_evaluate(cfg)


@pytest.mark.parametrize("mode", ["static", "non-static", "multichannel"])
def test_pretrained_embedding_modes(tmp_path, keyword_files, mode):
  train, test = keyword_files
  words = "good great bad awful the movie film".split()
  vectors = np.random.default_rng(0).normal(size=(len(words), 8)).astype(np.float32)
  path = tmp_path / "vectors.bin"
  embeddings.save_word2vec_bin(str(path), words, vectors)
  cfg = tiny_config(tmp_path / mode, train, test, embedding_mode=mode,
                    embeddings=str(path), num_epochs=1)
  train_and_evaluate(cfg)
  params, _ = final_params(tmp_path / mode, cfg)
  vocab = trainer_for(cfg).data.vocab
  row = vocab.encode(["good"])[0]
  if "frozen_embed" in params:  # static channels never move
    np.testing.assert_array_equal(params["frozen_embed"]["embedding"][row], vectors[0])
  if "embed" in params:  # fine-tuned channels start from the vectors and move
    assert not np.array_equal(params["embed"]["embedding"][row], vectors[0])


def test_mock_tfds_end_to_end(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    cfg = tiny_config(tmp_path, "", dataset="tfds:imdb_reviews", max_len=32, num_epochs=1)
    cfg = cfg.replace(train_file="")
    summary = train_and_evaluate(cfg)
  assert 0.0 <= summary["test/accuracy"] <= 1.0


def _sentences(n=200, max_len=40):
  rng = np.random.default_rng(0)
  return {"tokens": rng.integers(2, 50, (n, max_len)).astype(np.int32),
          "length": rng.integers(1, max_len, n).astype(np.int32),
          "label": rng.integers(0, 2, n).astype(np.int32)}


@pytest.mark.parametrize("order", ["reshuffle", "fixed"])
def test_data_order_depends_only_on_seed_and_step(order):
  arrays = _sentences()
  buckets = pipeline.bucket_lengths(40)
  spe = pipeline.steps_per_epoch(arrays, 8, buckets, order)
  from_zero = pipeline.train_batches(arrays, 8, seed=1, start_step=0, buckets=buckets,
                                     order=order)
  batches = [next(from_zero) for _ in range(2 * spe + 3)]
  resumed = pipeline.train_batches(arrays, 8, seed=1, start_step=spe + 2, buckets=buckets,
                                   order=order)
  for expected in batches[spe + 2:]:
    got = next(resumed)
    for k in expected:
      np.testing.assert_array_equal(got[k], expected[k])
  for b in batches:  # each batch padded only to its bucket, long enough for its sentences
    assert b["tokens"].shape[1] in buckets and b["length"].max() <= b["tokens"].shape[1]


@pytest.mark.parametrize("bucketed", [False, True])
def test_fixed_order_keeps_kims_batches_and_shuffles_only_their_order(bucketed):
  """Kim's code: one partition into batches for the whole run, the last batch (of each
  bucket) filled with random duplicates, so every example is seen every epoch."""
  arrays = _sentences(n=203)
  buckets = pipeline.bucket_lengths(40) if bucketed else ()
  epochs = [pipeline.epoch_batches(arrays, 8, seed=3, epoch=e, buckets=buckets,
                                   order="fixed") for e in range(3)]
  spe = pipeline.steps_per_epoch(arrays, 8, buckets, "fixed")
  as_set = lambda batches: {(tuple(sorted(idx)), length) for idx, length in batches}
  for batches in epochs:
    assert len(batches) == spe
    assert all(len(idx) == 8 for idx, _ in batches)
    assert as_set(batches) == as_set(epochs[0])
    counts = np.bincount(np.concatenate([idx for idx, _ in batches]), minlength=203)
    assert counts.min() >= 1 and counts.sum() == spe * 8
    for idx, length in batches:
      if length is not None:  # one bucket per batch, padded to that bucket
        assert arrays["length"][idx].max() <= length
        of = np.searchsorted(buckets, np.maximum(arrays["length"][idx], 1))
        assert set(of) == {buckets.index(length)}
  assert [tuple(i) for i, _ in epochs[0]] != [tuple(i) for i, _ in epochs[1]]
  if not bucketed:
    assert spe == 26 and np.sum(counts > 1) == 26 * 8 - 203  # 5 duplicates
  reshuffled = [pipeline.epoch_batches(arrays, 8, seed=3, epoch=e, buckets=buckets)
                for e in range(2)]
  assert as_set(reshuffled[0]) != as_set(reshuffled[1])


def test_a_stream_is_read_in_order_whatever_the_batch_order():
  arrays = {"tokens": np.arange(21)[:, None]}
  read = lambda order: [b["tokens"][:, 0].tolist() for b in itertools.islice(
      pipeline.train_batches(arrays, 8, seed=0, shuffle=False, order=order), 6)]
  assert read("fixed") == read("reshuffle") == [list(range(8)), list(range(8, 16))] * 3


def test_the_trainer_feeds_fixed_batches_and_counts_the_filled_last_one(tmp_path,
                                                                      keyword_files):
  train, test = keyword_files
  cfg = tiny_config(tmp_path, train, test, batch_size=10, batch_order="fixed",
                    bucket_by_length=False)
  data = datasets.prepare(datasets.load_raw(cfg), cfg)
  trainer = Trainer(cfg, data)
  n = pipeline.num_examples(data.train)
  assert n % 10 and trainer.steps_per_epoch == -(-n // 10)
  expected = pipeline.epoch_batches(data.train, 10, cfg.seed, 1, order="fixed")
  fed = trainer._host_batches(trainer.steps_per_epoch)
  for idx, _ in expected:
    np.testing.assert_array_equal(next(fed)["tokens"], data.train["tokens"][idx])
  streams = Trainer(cfg, dataclasses.replace(data, shuffle=False))
  assert streams.steps_per_epoch == n // 10  # a stream is read in order, whatever the flag


def test_eval_batches_cover_every_example_once():
  arrays = {"label": np.arange(21, dtype=np.int32)}
  seen = []
  for b in pipeline.eval_batches(arrays, 8):
    assert b["label"].shape == (8,)
    seen += list(b["label"][b["mask"] > 0])
  assert seen == list(range(21))
