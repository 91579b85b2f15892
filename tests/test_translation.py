"""The translation data kind, BLEU, and the translate / evaluate commands end to end."""

import gzip
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from nets import seq2seq, translate
from nets.config import Config
from nets.data import translation
from nets.errors import ConfigError, DataError
from nets.trainer import train_and_evaluate
from tests.conftest import REPO, cli_env, shared_data_dir
from tests.test_seq2seq import toy_pairs


def write_lines(path, lines, gz=False):
  data = "".join(l + "\n" for l in lines).encode("utf-8")
  path.write_bytes(gzip.compress(data) if gz else data)
  return str(path)


def config(workdir, **model_kw):
  model = dict(embed_dim=16, hidden_size=32, decoder_size=32, attention_size=32,
               dropout=0.0)
  model.update(model_kw)
  return Config(model="seq2seq", dataset="multi30k", workdir=str(workdir), batch_size=32,
                num_epochs=10, optimizer="adam", learning_rate=0.01, grad_clip=1.0,
                progress=False, tensorboard=False, log_every=20,
                model_config=seq2seq.Config(**model))


# --- tokenizer and files ------------------------------------------------------------------

def test_word_tokenizer_lower_cases_and_round_trips():
  assert translation.tokenize("A man's T-shirt, (red)!") == [
      "a", "man's", "t-shirt", ",", "(", "red", ")", "!"]
  assert translation.detokenize(["a", "man", ",", "(", "red", ")", "."]) == "a man, (red)."
  tok = translation.WordTokenizer.fit(["a dog runs .", "a cat ."], min_freq=2)
  assert tok.itos == ["<pad>", "<unk>", "<s>", "</s>", ".", "a"]  # ties by token
  assert tok.encode("A bird .") == [5, 1, 4]
  assert tok.decode([5, 1, 4, 3, 5]) == "a <unk>."  # stops at EOS


def test_parallel_files_plain_and_gzip(tmp_path):
  src = write_lines(tmp_path / "s.gz", ["ein hund", "zwei katzen"], gz=True)
  tgt = write_lines(tmp_path / "t.txt", ["a dog", "two cats"])
  assert translation.read_parallel(src, tgt, "test") == (["ein hund", "zwei katzen"],
                                                         ["a dog", "two cats"])
  short = write_lines(tmp_path / "short.txt", ["a dog"])
  with pytest.raises(DataError, match="not parallel"):
    translation.read_parallel(src, short, "test")
  with pytest.raises(DataError, match="not found"):
    translation.read_parallel(tmp_path / "missing", tgt, "test")


def test_prepare_stacks_source_and_target_for_length_buckets():
  cfg = config("unused")
  raw = translation.ParallelSplits((["a b c", "d"], ["x y", "z z z z"]), None, None)
  data = translation.prepare(raw, cfg.replace(valid_fraction=0.5))
  arrays = data.train
  assert arrays["tokens"].shape[2] == 2 and arrays["tokens"].dtype == np.int32
  for i in range(len(arrays["length"])):
    s, t = arrays["src_length"][i], arrays["tgt_length"][i]
    assert arrays["tokens"][i, t - 1, 1] == translation.EOS
    assert np.all(arrays["tokens"][i, s:, 0] == 0) and np.all(arrays["tokens"][i, t:, 1] == 0)
    assert arrays["length"][i] == max(s, t)
  assert data.valid is not None and data.test is None


@pytest.mark.skipif(shared_data_dir() is None, reason="needs NETS_DATA_DIR")
def test_multi30k_from_the_local_copy_both_directions():
  cfg = config("unused").replace(data_dir=shared_data_dir())
  raw = translation.load_raw(cfg)
  assert [len(s[0]) for s in (raw.train, raw.valid, raw.test)] == [29000, 1014, 1000]
  assert raw.train[0][0].startswith("Zwei junge weiße Männer")
  assert raw.train[1][0].startswith("Two young, White males")
  flipped = translation.load_raw(cfg.replace(model_config=seq2seq.Config(src_lang="en",
                                                                         tgt_lang="de")))
  assert flipped.train == (raw.train[1], raw.train[0])
  with pytest.raises(ConfigError, match="src_lang=fr"):
    translation.load_raw(cfg.replace(model_config=seq2seq.Config(src_lang="fr")))


def test_multi30k_files_are_registered_with_the_readme_hashes():
  from nets.data import sources
  remote = sources.FILES["multi30k/test_2016_flickr.de.gz"]
  assert remote.sha256.startswith("9204244e")
  assert "multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/" in remote.url


def test_tfds_translation_dataset_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5):
    raw = translation.load_raw(config("unused").replace(dataset="tfds:ted_hrlr_translate/pt_to_en"))
  assert (raw.src_lang, raw.tgt_lang) == ("pt", "en")
  assert len(raw.train[0]) == len(raw.train[1]) == 5
  assert all(isinstance(s, str) for s in raw.train[0])


def test_sentencepiece_subwords_round_trip():
  pytest.importorskip("sentencepiece")
  src, _ = toy_pairs(300, 0)
  tok = translation.SubwordTokenizer.fit([s.upper() for s in src], vocab_size=20)
  ids = tok.encode("A B C")
  assert all(i > translation.EOS for i in ids)
  assert tok.decode(ids + [translation.EOS, 7]) == "A B C"
  again = translation.tokenizer_from(tok.describe())
  assert again.encode("A B C") == ids and not again.lowercase


# --- BLEU -----------------------------------------------------------------------------------

def test_bleu_on_known_sentences():
  pytest.importorskip("sacrebleu")
  refs = ["A man is riding a horse.", "Two dogs play in the snow."]
  assert translate.bleu(refs, refs, lowercase=False)[0] == pytest.approx(100.0)
  assert translate.bleu(["a man is riding a horse.", "two dogs play in the snow."], refs,
                        lowercase=True)[0] == pytest.approx(100.0)
  # One hypothesis, 4-gram precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty.
  score, signature = translate.bleu(["the cat sat on a mat"], ["the cat sat on the mat"],
                                    lowercase=False)
  assert score == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, rel=1e-4)
  assert "nrefs:1" in signature


# --- end to end -----------------------------------------------------------------------------

def test_train_translate_and_evaluate_on_unseen_files(tmp_path):
  paths = {}
  for split, (n, seed) in {"train": (640, 0), "valid": (64, 1), "test": (64, 2)}.items():
    src, tgt = toy_pairs(n, seed)
    paths[split] = (write_lines(tmp_path / f"{split}.src", src),
                    write_lines(tmp_path / f"{split}.tgt.gz", tgt, gz=True))
  cfg = config(tmp_path / "run", train_src_file=paths["train"][0],
               train_tgt_file=paths["train"][1], valid_src_file=paths["valid"][0],
               valid_tgt_file=paths["valid"][1])
  summary = train_and_evaluate(cfg)
  assert summary["selected_on"] == "valid/loss" and summary["valid/accuracy"] > 0.9
  with open(tmp_path / "run" / "data.json") as f:
    assert json.load(f)["name"] == "file"

  unseen_src, unseen_tgt = toy_pairs(40, 3)
  src_file = write_lines(tmp_path / "unseen.src", unseen_src)
  tgt_file = write_lines(tmp_path / "unseen.tgt", unseen_tgt)
  env = cli_env()
  png = tmp_path / "att.png"
  out = subprocess.run([sys.executable, "-m", "experiments.translate",
                        f"--workdir={cfg.workdir}", f"--attention_png={png}", "--beam_size=3"],
                       input="a b c d\nh g\n", cwd=REPO, env=env, capture_output=True,
                       text=True, check=True)
  assert out.stdout.splitlines() == ["d c b a", "g h"]
  assert png.stat().st_size > 1000
  result = subprocess.run([sys.executable, "-m", "experiments.evaluate",
                           f"--workdir={cfg.workdir}", f"--test_src_file={src_file}",
                           f"--test_tgt_file={tgt_file}", "--batch_size=16"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True)
  metrics = json.loads(result.stdout.strip().splitlines()[-1])
  assert metrics["bleu"] > 80 and metrics["sentences"] == 40
  assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]), rel=1e-5)

  bad = subprocess.run([sys.executable, "-m", "experiments.translate",
                        f"--workdir={cfg.workdir}", "--beam_size=0"], input="a\n", cwd=REPO,
                       env=env, capture_output=True, text=True)
  assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
  assert "--beam_size=0" in bad.stderr
