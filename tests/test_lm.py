"""Character language models: chars data kind, truncated BPTT, task, sampling, CLIs."""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import lstm_lm, rnn_lm, tasks
from nets.checkpoint import Checkpoints
from nets.config import Config
from nets.data import chars, datasets, pipeline
from nets.errors import ConfigError, DataError
from nets.trainer import Trainer, restore_for_eval, train_and_evaluate
from tests.conftest import REPO, cli_env, assert_every_param_changed, shared_data_dir

TEXT = "".join(f"{w} loves {v}.\n" for w in ("ann", "bob", "cy", "dee")
               for v in ("tea", "jam", "figs", "rice")) * 12


@pytest.fixture
def text_file(tmp_path):
  path = tmp_path / "train.txt"
  path.write_text(TEXT)
  return path


def lm_config(workdir, train_file, model="lstm_lm", **kw):
  model_kw = {k: kw.pop(k) for k in list(kw) if k in rnn_lm.Config.__dataclass_fields__}
  model_config = rnn_lm.Config(**{**dict(embed_dim=8, hidden_size=16, num_layers=2,
                                         dropout=0.1, bptt=12), **model_kw})
  base = dict(model=model, dataset="file", train_file=str(train_file), workdir=str(workdir),
              batch_size=4, num_epochs=3, optimizer="adam", learning_rate=0.01,
              grad_clip=5.0, progress=False, tensorboard=False, log_every=5,
              model_config=model_config)
  base.update(kw)
  return Config(**base)


def trainer_for(cfg):
  return Trainer(cfg, datasets.prepare(datasets.load_raw(cfg), cfg))


# --- data layout --------------------------------------------------------------------------

def test_training_windows_continue_row_by_row():
  ids = np.arange(1000, dtype=np.int32)
  arrays = chars.training_windows(ids, streams=4, bptt=10)
  np.testing.assert_array_equal(arrays["targets"], arrays["tokens"] + 1)
  batches = [b for _, b in zip(range(pipeline.steps_per_epoch(arrays, 4)),
                               pipeline.train_batches(arrays, 4, seed=0, shuffle=False))]
  for s in range(len(batches) - 1):  # row i of batch s+1 continues row i of batch s
    np.testing.assert_array_equal(batches[s + 1]["tokens"][:, 0],
                                  batches[s]["tokens"][:, -1] + 1)
  streams = np.concatenate([b["tokens"] for b in batches], axis=1)
  assert len(np.unique(streams)) == streams.size  # no character twice


def test_evaluation_windows_cover_every_target_once():
  ids = np.arange(1, 104, dtype=np.int32)  # 103 chars -> 102 targets
  arrays = chars.evaluation_windows(ids, streams=4, bptt=5)
  assert arrays["tokens"].shape[0] % 4 == 0
  weight = arrays["weight"] > 0
  assert weight.sum() == 102
  np.testing.assert_array_equal(np.sort(arrays["targets"][weight]), ids[1:])
  np.testing.assert_array_equal(arrays["targets"][weight], arrays["tokens"][weight] + 1)


def test_vocabulary_maps_unseen_characters_to_unk():
  vocab = chars.CharVocab.from_text("abca\n")
  assert vocab.itos == ["<unk>", "\n", "a", "b", "c"]
  np.testing.assert_array_equal(vocab.encode("az\n"), [2, 0, 1])
  assert vocab.decode([2, 1, 4]) == "a\nc"


def test_split_is_by_position_90_10():
  train, valid = chars.split_by_position("x" * 90 + "y" * 10, 0.1)
  assert train == "x" * 90 and valid == "y" * 10


@pytest.mark.skipif(shared_data_dir() is None, reason="needs NETS_DATA_DIR")
def test_tiny_shakespeare_from_the_local_copy():
  cfg = Config(model="lstm_lm", dataset="tiny_shakespeare", data_dir=shared_data_dir(),
               model_config=rnn_lm.Config())
  raw = chars.load_raw(cfg)
  assert (len(raw.train), len(raw.valid)) == (1003854, 111540)
  assert raw.train.startswith("First Citizen:") and raw.test is None


def test_tfds_tiny_shakespeare_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  tf = pytest.importorskip("tensorflow")
  texts = {"train": "hello world", "validation": "hi there", "test": "bye now"}
  as_dataset = lambda builder, split, **kw: tf.data.Dataset.from_tensors({"text": texts[split]})
  with tfds.testing.mock_data(num_examples=1, as_dataset_fn=as_dataset):
    raw = chars.load_raw(Config(model="lstm_lm", dataset="tfds:tiny_shakespeare",
                                model_config=rnn_lm.Config()))
  assert (raw.train, raw.valid, raw.test) == ("hello world", "hi there", "bye now")


def test_user_errors_are_one_line(tmp_path, text_file):
  with pytest.raises(ConfigError, match="tiny_shakespeare"):
    chars.load_raw(lm_config(tmp_path, text_file, dataset="sst2"))
  with pytest.raises(DataError, match="too short"):
    trainer_for(lm_config(tmp_path, text_file, batch_size=64, bptt=100))
  with pytest.raises(DataError, match="not found"):
    chars.load_raw(lm_config(tmp_path, tmp_path / "missing.txt"))


# --- the model ------------------------------------------------------------------------------

class Info:
  info = {"vocabulary": ["<unk>"] + list("abcdefg"), "streams": 2, "bptt": 6}


@pytest.mark.parametrize("family", [rnn_lm, lstm_lm])
def test_carried_state_across_windows_equals_one_long_sequence(family):
  network = family.build(rnn_lm.Config(embed_dim=4, hidden_size=8, num_layers=2), Info())
  params = network.init(jax.random.PRNGKey(0))
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 18), 0, 8)
  whole, _ = network.apply(params, {"tokens": tokens}, model_state=network.initial_model_state())
  state, pieces = network.initial_model_state(), []
  for w in range(3):
    logits, state = network.apply(params, {"tokens": tokens[:, 6 * w:6 * (w + 1)]},
                                  model_state=state)
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), whole, rtol=1e-5, atol=1e-5)


def test_truncated_bptt_stops_gradients_at_the_window_start(text_file, tmp_path):
  cfg = lm_config(tmp_path, text_file, dropout=0.0)
  trainer = trainer_for(cfg)
  state = trainer.initial_state()
  batch = trainer.put(next(trainer.batches(0)))
  carried = jax.tree.map(lambda c: c + 0.5, state.model_state)
  grad_of_state = jax.grad(lambda ms: trainer.loss_fn(state.params, ms, batch, None,
                                                      False)[0])(carried)
  assert all(np.all(g == 0) for g in jax.tree.leaves(grad_of_state))
  # ...while the state itself changes the forward pass (it is carried, not reset).
  loss_zero = trainer.loss_fn(state.params, state.model_state, batch, None, False)[0]
  loss_carried = trainer.loss_fn(state.params, carried, batch, None, False)[0]
  assert float(loss_zero) != float(loss_carried)


def test_train_step_carries_the_state_and_changes_every_parameter(text_file, tmp_path):
  cfg = lm_config(tmp_path, text_file)
  trainer = trainer_for(cfg)
  state = trainer.initial_state()
  before = jax.device_get(state.params)
  assert all(np.all(c == 0) for c in jax.tree.leaves(state.model_state))
  state, metrics = trainer.train_step(state, next(trainer.batches(0)))
  assert_every_param_changed(before, state.params)
  assert all(np.any(c != 0) for c in jax.tree.leaves(state.model_state))
  assert math.isfinite(float(metrics["loss"]))


def test_task_reports_nats_and_bits_and_selects_on_lowest_valid_loss():
  task = tasks.get("language_model")
  assert (task.best_metric, task.best_mode) == ("valid/loss", "min")
  assert task.derived({"loss": math.log(2) * 3})["bits_per_char"] == pytest.approx(3)


# --- end to end -----------------------------------------------------------------------------

def test_tiny_run_learns_resumes_samples_and_evaluates(tmp_path, text_file):
  full = lm_config(tmp_path / "full", text_file, checkpoint_every=4)
  summary = train_and_evaluate(full)
  assert summary["selected_on"] == "valid/loss"
  assert summary["valid/bits_per_char"] == pytest.approx(summary["valid/loss"] / math.log(2))
  assert summary["valid/loss"] < 0.8 * math.log(len(set(TEXT)) + 1)  # learned something

  part = full.replace(workdir=str(tmp_path / "part"))
  train_and_evaluate(part.replace(max_steps=7))  # not a checkpoint multiple
  resumed = train_and_evaluate(part)
  assert resumed["resumed_from"] == 7
  states = []
  for cfg in (full, part):
    ckpt = Checkpoints(cfg.workdir)
    states.append(jax.device_get(ckpt.restore(trainer_for(cfg).abstract_state)))
    ckpt.close()
  # Bitwise, including the carried hidden state.
  jax.tree.map(np.testing.assert_array_equal, states[0], states[1])

  # Sampling: reproducible for a seed, different for another.
  cfg, trainer, state, _ = restore_for_eval(full.workdir)
  vocab = chars.vocabulary(trainer.data)
  sample = lambda seed: vocab.decode(lstm_lm.generate(trainer.network, state.params,
                                                      vocab.encode("ann"), 40, 0.8, seed))
  assert sample(3) == sample(3) and len(sample(3)) == 40
  assert sample(3) != sample(4)

  # Evaluate on an unseen file (with characters never seen in training: <unk>).
  unseen = tmp_path / "unseen.txt"
  unseen.write_text("zoe loves kiwi.\nann loves tea.\n")
  arrays = chars.encode_file(str(unseen), trainer.data)
  assert arrays["weight"].sum() == len(unseen.read_text()) - 1
  metrics = trainer.evaluate(state.params, arrays)
  assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0

  env = cli_env()
  out = subprocess.run([sys.executable, "-m", "experiments.evaluate",
                        f"--workdir={full.workdir}", f"--test_file={unseen}"],
                       cwd=REPO, env=env, capture_output=True, text=True, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
  assert result["bits_per_char"] == pytest.approx(metrics["loss"] / math.log(2), rel=1e-5)
  runs = [subprocess.run([sys.executable, "-m", "experiments.sample",
                          f"--workdir={full.workdir}", "--prime=ann", "--length=30",
                          "--temperature=0.8", "--seed=5"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
          for _ in range(2)]
  assert runs[0] == runs[1] and runs[0].startswith("ann")
  bad = subprocess.run([sys.executable, "-m", "experiments.sample",
                        f"--workdir={full.workdir}", "--temperature=0"],
                       cwd=REPO, env=env, capture_output=True, text=True)
  assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
