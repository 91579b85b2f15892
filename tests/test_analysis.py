"""The README's analysis scripts (docs/analysis/) still run on a finished run."""

import importlib.util
import json

from tests.conftest import REPO, tiny_config, write_keyword_dataset
from nets.trainer import train_and_evaluate

ANALYSIS = REPO / "docs" / "analysis"


def load(name):
  spec = importlib.util.spec_from_file_location(name, ANALYSIS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_kim_vocabulary_gives_unseen_words_their_own_vectors_and_matches_the_run(tmp_path):
  train = write_keyword_dataset(tmp_path / "train.txt", 96, seed=0)
  test = write_keyword_dataset(tmp_path / "test.txt", 40, seed=1)
  # Words training never saw, on every test line: only the emulation reads them apart.
  lines = test.read_text().splitlines()
  test.write_text("".join(f"{line} zyzzyva{i % 7}\n" for i, line in enumerate(lines)))
  cfg = tiny_config(tmp_path / "run", train, test)
  train_and_evaluate(cfg)
  result = load("trec_kim_vocabulary").evaluate(str(tmp_path / "run"))
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert result["checkpoint"] == "best"
  assert result["test/as_trained"] == summary["test/accuracy"]
  assert result["unseen_words"] >= 7
  assert 0.0 <= result["test/kim_vocab"] <= 1.0
  # Validation (held out of train.txt) has no unseen word: both readings agree.
  assert result["valid/kim_vocab"] == result["valid/as_trained"]
