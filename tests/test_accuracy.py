"""The README's accuracy runs with the issues' targets. Slow (minutes to an hour each on
2 CPU cores): excluded by default, run with `python -m pytest -m slow tests/test_accuracy.py`.
Selection is on validation; the targets are checked on the selected checkpoint's test
metric (validation loss for language models)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared_data_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shared_data_dir() is None, reason="needs NETS_DATA_DIR")]

RUNS = {
    "textcnn_sst2": (["--model=textcnn", "--dataset=sst2"], "test/accuracy", ">=", 0.827),
    "textcnn_mr_cv": (["--model=textcnn", "--dataset=mr", "--cv_folds=10"],
                      "test/accuracy", ">=", 0.761),
    "textcnn_trec": (["--model=textcnn", "--dataset=trec"], "test/accuracy", ">=", 0.912),
    "convnet_mnist": (["--model=convnet", "--dataset=mnist"], "test/accuracy", ">=", 0.990),
    "lstm_lm_shakespeare": (
        ["--model=lstm_lm", "--dataset=tiny_shakespeare", "--num_layers=2",
         "--hidden_size=384", "--embed_dim=64", "--bptt=100", "--batch_size=32",
         "--dropout=0.1", "--learning_rate=2e-3", "--lr_schedule=cosine",
         "--warmup_steps=50", "--grad_clip=5", "--max_steps=1100"],
        "valid/loss", "<=", 1.55),
    "lstm_sst2": (
        ["--model=lstm", "--dataset=sst2", "--embed_dim=300", "--hidden_size=150",
         "--bidirectional", "--state_pooling=max", "--dropout=0.5", "--learning_rate=1e-3",
         "--grad_clip=5", "--num_epochs=4", "--eval_every=500"],
        "test/accuracy", ">=", 0.82),
}


def run_command(module: str, *flags) -> str:
  """Runs `python -m module flags` from the repository; its stdout."""
  result = subprocess.run([sys.executable, "-m", module, *flags], cwd=REPO,
                          env=dict(os.environ), capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def train(workdir, flags) -> None:
  run_command("experiments.train", *flags, f"--workdir={workdir}", "--progress=false",
              "--tensorboard=false")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_readme_accuracy(name, tmp_path):
  flags, metric, op, target = RUNS[name]
  workdir = tmp_path / name
  train(workdir, flags)
  value = json.loads((workdir / "summary.json").read_text())[metric]
  assert (value >= target) if op == ">=" else (value <= target), (metric, value, target)


def test_readme_seq2seq_bleu(tmp_path):
  """Multi30k de->en: greedy sacreBLEU on test2016 of the validation-selected checkpoint
  >= 28.3 (the attention model of the PyTorch seq2seq tutorial)."""
  workdir = tmp_path / "seq2seq"
  train(workdir, ["--model=seq2seq", "--hidden_size=256", "--decoder_size=256",
                  "--attention_size=256", "--dropout=0.3", "--num_epochs=8"])
  multi30k = os.path.join(shared_data_dir(), "multi30k")
  out = run_command("experiments.evaluate", f"--workdir={workdir}",
                    f"--test_src_file={multi30k}/test_2016_flickr.de.gz",
                    f"--test_tgt_file={multi30k}/test_2016_flickr.en.gz")
  assert json.loads(out.strip().splitlines()[-1])["bleu"] >= 28.3
