"""Tests for nets.data.text: readers, tokenizers, splits, vocabulary, arrays."""

import collections
import os
import pathlib
import re

import numpy as np
import pytest

from nets.data import text
from nets.errors import ConfigError, DataError

DATA_DIR = os.environ.get("NETS_DATA_DIR")
needs_data = pytest.mark.skipif(not DATA_DIR, reason="set NETS_DATA_DIR to the shared data folder")


@pytest.fixture(autouse=True)
def _no_downloads(tmp_path, monkeypatch):
  """Real-data tests read NETS_DATA_DIR only: an empty cache and no mirror."""
  monkeypatch.setenv("NETS_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setenv("NETS_DATA_MIRROR", "http://127.0.0.1:9")  # discard port: fails fast


def _write(path: pathlib.Path, data: bytes) -> pathlib.Path:
  path.write_bytes(data)
  return path


# --------------------------------------------------------------------------
# Label-first files


def test_read_label_first_quirks(tmp_path):
  data = (b"1 caf\xe9 society\n"  # Latin-1 e-acute: not valid UTF-8
          b"0 caf\xc3\xa9 bar\n"  # valid UTF-8 e-acute
          b"\n"
          b"   \n"
          b"1 an ending \x85 still one line\n"  # 0x85 (NEL once decoded) is no line break
          b"0\n"  # label only: an empty sentence, kept
          b"1 windows line\r\n")
  examples = text.read_label_first(_write(tmp_path / "f.txt", data), tokenizer="whitespace")
  assert examples == [
      (["caf\xe9", "society"], 1),
      (["caf\xe9", "bar"], 0),
      (["an", "ending", "still", "one", "line"], 1),  # str.split() treats U+0085 as space
      ([], 0),
      (["windows", "line"], 1),
  ]


def test_read_label_first_keeps_0x85_inside_token(tmp_path):
  path = _write(tmp_path / "f.txt", b"1 wait\x85what\n0 next\n")
  examples = text.read_label_first(path, tokenizer="kim")
  # Kim's cleaning turns the non-ASCII byte into a space; still two lines.
  assert examples == [(["wait", "what"], 1), (["next"], 0)]


@pytest.mark.parametrize("line", [b"pos a sentence", b"1.0 a sentence", b"- a"])
def test_read_label_first_bad_label(tmp_path, line):
  path = _write(tmp_path / "bad.txt", b"0 fine\n\n" + line + b"\n")
  with pytest.raises(DataError, match=r"bad\.txt line 3") as info:
    text.read_label_first(path)
  assert "\n" not in str(info.value)


def test_read_label_first_missing_file(tmp_path):
  with pytest.raises(DataError, match="not found"):
    text.read_label_first(tmp_path / "nope.txt")


# --------------------------------------------------------------------------
# Tokenizers


def _kim_clean_str_reference(string, keep_case=False):
  """Kim's clean_str as 12 sequential substitutions (brackets without backslash)."""
  for pattern, replacement in [
      (r"[^A-Za-z0-9(),!?\'\`]", " "), (r"\'s", " 's"), (r"\'ve", " 've"), (r"n\'t", " n't"),
      (r"\'re", " 're"), (r"\'d", " 'd"), (r"\'ll", " 'll"), (r",", " , "), (r"!", " ! "),
      (r"\(", " ( "), (r"\)", " ) "), (r"\?", " ? "), (r"\s{2,}", " ")]:
    string = re.sub(pattern, replacement, string)
  string = string.strip()
  return string if keep_case else string.lower()


@pytest.mark.parametrize("sentence, tokens", [
    ("It's a movie, isn't it?", ["it", "'s", "a", "movie", ",", "is", "n't", "it", "?"]),
    ("We've (really) done it!", ["we", "'ve", "(", "really", ")", "done", "it", "!"]),
    ("They're sure you'd say we'll go.", ["they", "'re", "sure", "you", "'d", "say", "we", "'ll",
                                          "go"]),
    ("a -- b ; c: d... `e'", ["a", "b", "c", "d", "`e'"]),
    ("caf\xe9 cr\xe8me", ["caf", "cr", "me"]),
    ("   ", []),
])
def test_kim_tokenizer(sentence, tokens):
  assert text.tokenize(sentence, "kim") == tokens
  assert text.tokenize(sentence, "kim") == _kim_clean_str_reference(sentence).split()


def test_kim_tokenizer_keep_case():
  assert text.tokenize("What's NASA?", "kim", keep_case=True) == ["What", "'s", "NASA", "?"]
  assert text.tokenize("What's NASA?", "kim") == ["what", "'s", "nasa", "?"]


def test_whitespace_and_lower_tokenizers():
  assert text.tokenize("Hello,  World!\tx", "whitespace") == ["Hello,", "World!", "x"]
  assert text.tokenize("Hello,  World!\tx", "lower") == ["hello,", "world!", "x"]
  with pytest.raises(ConfigError, match="unknown tokenizer"):
    text.tokenize("x", "bpe")


@needs_data
def test_kim_tokenizer_matches_reference_on_real_lines():
  tc = pathlib.Path(DATA_DIR, "text_classification")
  for rel, keep_case in [("mr/rt-polarity.all", False), ("trec/TREC.train.all", True)]:
    for raw in (tc / rel).read_bytes().split(b"\n")[:3000]:
      line = raw.decode("latin-1")
      assert text.tokenize(line, "kim", keep_case=keep_case) == _kim_clean_str_reference(
          line, keep_case).split(), line


# --------------------------------------------------------------------------
# SST trees

_TREES = (
    "(3 (2 (2 The) (2 film)) (4 (3 (2 is) (4 great)) (2 .)))\n"
    "\n"
    "(1 (2 -LRB-) (1 (2 The) (0 awful)) (2 -RRB-))\n"
    "(4 (4 great) (2 film))\n"  # "great" repeats with the same label, "film" too
)


def test_read_sst_phrases_fine(tmp_path):
  path = _write(tmp_path / "trees.txt", _TREES.encode())
  examples = text.read_sst_phrases(path, fine=True)
  phrases = {" ".join(tokens): label for tokens, label in examples}
  assert phrases == {
      "the": 2, "film": 2, "the film": 2, "is": 2, "great": 4, "is great": 3, ".": 2,
      "is great .": 4, "the film is great .": 3,
      "(": 2, "awful": 0, "the awful": 1, ")": 2, "( the awful )": 1,
      "great film": 4,
  }
  assert len(examples) == len(phrases)  # deduplicated
  # Children come before their parents; sentences end each tree.
  assert [" ".join(t) for t, _ in examples][:3] == ["the", "film", "the film"]


def test_read_sst_phrases_binary(tmp_path):
  path = _write(tmp_path / "trees.txt", _TREES.encode())
  phrases = {" ".join(t): label for t, label in text.read_sst_phrases(path, fine=False)}
  assert phrases == {"great": 1, "is great": 1, "is great .": 1, "the film is great .": 1,
                     "awful": 0, "the awful": 0, "( the awful )": 0, "great film": 1}


def test_read_sst_phrases_dedup_keeps_first_label(tmp_path):
  path = _write(tmp_path / "trees.txt", b"(4 (3 Good) (2 .))\n(1 (1 good) (2 .))\n")
  examples = text.read_sst_phrases(path, fine=True)
  assert (["good"], 3) in examples and (["good"], 1) not in examples
  assert (["good", "."], 4) in examples and (["good", "."], 1) not in examples


def test_read_sst_phrases_tokenized_drops_empty(tmp_path):
  path = _write(tmp_path / "trees.txt", b"(3 (2 (2 It) (2 's)) (2 .))\n")
  examples = text.read_sst_phrases(path, fine=True, tokenizer="kim")
  assert examples == [(["it"], 2), (["'s"], 2), (["it", "'s"], 2), (["it", "'s"], 3)]


@pytest.mark.parametrize("tree", [b"(3 (2 a) (2 b)\n", b"(x (2 a))\n", b"3 a)\n", b"()\n"])
def test_read_sst_phrases_malformed(tmp_path, tree):
  path = _write(tmp_path / "trees.txt", b"(2 ok)\n" + tree)
  with pytest.raises(DataError, match="line 2"):
    text.read_sst_phrases(path, fine=True)


# --------------------------------------------------------------------------
# Real Kim datasets (from NETS_DATA_DIR)


def _counts(examples):
  return [c for _, c in sorted(collections.Counter(label for _, label in examples).items())]


@needs_data
def test_real_mr_subj_trec():
  mr = text.load_text_classification("mr", data_dir=DATA_DIR)
  assert (len(mr.train), mr.valid, mr.test, mr.num_classes) == (10662, None, None, 2)
  assert _counts(mr.train) == [5331, 5331]
  subj = text.load_text_classification("subj", data_dir=DATA_DIR)
  assert (len(subj.train), subj.test) == (10000, None) and _counts(subj.train) == [5000, 5000]
  trec = text.load_text_classification("trec", data_dir=DATA_DIR)
  assert (len(trec.train), trec.valid, len(trec.test)) == (5452, None, 500)
  assert trec.class_names == ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]
  assert _counts(trec.test) == [138, 94, 9, 65, 81, 113]
  assert trec.train[1] == (["What", "films", "featured", "the", "character", "Popeye", "Doyle",
                            "?"], 1)  # Kim keeps TREC's case


@needs_data
def test_real_sst_sentences():
  sst2 = text.load_text_classification("sst2", data_dir=DATA_DIR, phrases=False)
  assert [len(sst2.train), len(sst2.valid), len(sst2.test)] == [6920, 872, 1821]
  assert _counts(sst2.train) == [3310, 3610] and _counts(sst2.test) == [912, 909]
  sst1 = text.load_text_classification("sst1", data_dir=DATA_DIR, phrases=False)
  assert [len(sst1.train), len(sst1.valid), len(sst1.test)] == [8544, 1101, 2210]
  assert sst1.num_classes == 5 and _counts(sst1.valid) == [139, 289, 229, 279, 165]
  # PTB bracket escapes become brackets, as in the tree phrases.
  assert not any("lrb" in t for tokens, _ in sst1.train for t in tokens)


@needs_data
def test_real_sst2_phrases():
  sst2 = text.load_text_classification("sst2", data_dir=DATA_DIR)
  assert len(sst2.train) == 77195  # unique non-neutral phrases of the training trees
  assert [len(sst2.valid), len(sst2.test)] == [872, 1821]  # still sentences
  sentences = {tuple(t) for t, _ in text.load_text_classification(
      "sst2", data_dir=DATA_DIR, phrases=False).train}
  phrases = {tuple(t) for t, _ in sst2.train}
  assert sentences <= phrases  # every training sentence is a (root) phrase


# --------------------------------------------------------------------------
# User files and unknown names


def test_file_dataset(tmp_path):
  train = _write(tmp_path / "train.tsv", b"2 Third class here\n0 zero\n1 one one\n")
  test = _write(tmp_path / "test.tsv", b"3 only in test\n")
  splits = text.load_text_classification("file", train_file=str(train), test_file=str(test),
                                         tokenizer="lower")
  assert splits.num_classes == 4 and splits.valid is None and splits.name == "file"
  assert splits.train[0] == (["third", "class", "here"], 2)
  assert splits.test == [(["only", "in", "test"], 3)]


def test_file_dataset_errors(tmp_path):
  train = _write(tmp_path / "train.txt", b"0 a\n1 b\n")
  with pytest.raises(DataError, match=r"valid file not found: .*missing\.txt"):
    text.load_text_classification("file", train_file=str(train),
                                  valid_file=str(tmp_path / "missing.txt"))
  with pytest.raises(ConfigError, match="--train_file"):
    text.load_text_classification("file")
  negative = _write(tmp_path / "neg.txt", b"0 a\n-1 b\n")
  with pytest.raises(DataError, match="negative label -1"):
    text.load_text_classification("file", train_file=str(negative))


def test_unknown_dataset_lists_names():
  with pytest.raises(DataError, match="mr, sst1, sst2, subj, trec"):
    text.load_text_classification("imdb")


def test_missing_kim_data_is_one_line_data_error(tmp_path):
  with pytest.raises(DataError, match="NETS_DATA_DIR") as info:
    text.load_text_classification("mr", data_dir=str(tmp_path))
  assert "\n" not in str(info.value)


# --------------------------------------------------------------------------
# Splits


def test_cv_fold_ids():
  folds = text.cv_fold_ids(103, 10, seed=0)
  assert folds.shape == (103,) and set(folds.tolist()) == set(range(10))
  sizes = np.bincount(folds)
  assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 103
  np.testing.assert_array_equal(folds, text.cv_fold_ids(103, 10, seed=0))
  assert not np.array_equal(folds, text.cv_fold_ids(103, 10, seed=1))
  with pytest.raises(ConfigError):
    text.cv_fold_ids(5, 10, seed=0)


def test_split_off():
  examples = [([str(i)], i % 2) for i in range(50)]
  rest, held = text.split_off(examples, 0.1, seed=3)
  assert len(held) == 5 and len(rest) == 45
  assert sorted(rest + held) == sorted(examples)
  assert (rest, held) == text.split_off(examples, 0.1, seed=3)
  assert held != text.split_off(examples, 0.1, seed=4)[1]
  assert len(text.split_off(examples[:3], 0.01, seed=0)[1]) == 1  # at least one held out
  with pytest.raises(ConfigError):
    text.split_off(examples, 1.5, seed=0)


def _toy(n, offset=0):
  return [([f"w{i}"], i % 2) for i in range(offset, offset + n)]


def test_make_splits_cv():
  splits = text.TextSplits(train=_toy(100), valid=None, test=None, num_classes=2, name="mr")
  tests = []
  for fold in range(10):
    s = text.make_splits(splits, seed=0, cv_folds=10, fold=fold)
    assert len(s.test) == 10 and len(s.valid) == 9 and len(s.train) == 81
    assert not {tuple(t) for t, _ in s.test} & {tuple(t) for t, _ in s.train + s.valid}
    tests += s.test
  assert sorted(tests) == sorted(splits.train)  # the folds partition the data
  again = text.make_splits(splits, seed=0, cv_folds=10, fold=3)
  assert again == text.make_splits(splits, seed=0, cv_folds=10, fold=3)


def test_make_splits_rules():
  no_test = text.TextSplits(train=_toy(100), valid=None, test=None, num_classes=2)
  s = text.make_splits(no_test, seed=1, test_fraction=0.2, valid_fraction=0.25)
  assert (len(s.train), len(s.valid), len(s.test)) == (60, 20, 20)
  assert sorted(s.train + s.valid + s.test) == sorted(no_test.train)

  trec_like = text.TextSplits(train=_toy(100), valid=None, test=_toy(7, 500), num_classes=2,
                              name="trec")
  s = text.make_splits(trec_like, seed=1)
  assert s.test == trec_like.test and (len(s.train), len(s.valid)) == (90, 10)
  with pytest.raises(DataError, match="--cv_folds is for datasets without a test split"):
    text.make_splits(trec_like, seed=1, cv_folds=10)

  complete = text.TextSplits(train=_toy(10), valid=_toy(3, 50), test=_toy(4, 60), num_classes=2)
  assert text.make_splits(complete, seed=0) == complete
  with pytest.raises(ConfigError):
    text.make_splits(no_test, seed=0, cv_folds=10, fold=10)


# --------------------------------------------------------------------------
# Vocabulary and arrays


def test_vocab(tmp_path):
  train = [(["b", "a", "b", "c"], 0), (["a", "b", "\x85odd"], 1)]
  vocab = text.Vocab.from_examples(train)
  assert vocab.itos == ["<pad>", "<unk>", "b", "a", "c", "\x85odd"]  # freq desc, then token
  assert (vocab.PAD, vocab.UNK, len(vocab)) == (0, 1, 6)
  assert vocab.encode(["a", "never-seen", "\x85odd"]) == [3, 1, 5]
  assert text.Vocab.from_examples(train, min_freq=2).itos == ["<pad>", "<unk>", "b", "a"]
  assert text.Vocab.from_examples(train, max_size=1).itos == ["<pad>", "<unk>", "b"]
  vocab.save(tmp_path / "vocab.txt")
  assert text.Vocab.load(tmp_path / "vocab.txt") == vocab
  assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").startswith("<pad>\n<unk>\nb\n")


def test_vocab_is_train_only_and_load_errors(tmp_path):
  splits = text.TextSplits(train=[(["seen"], 0)], valid=[(["dev"], 1)], test=[(["test"], 0)],
                           num_classes=2)
  vocab = text.Vocab.from_examples(splits.train)
  assert "dev" not in vocab and vocab.encode(["test", "seen"]) == [vocab.UNK, 2]
  _write(tmp_path / "bad.txt", b"hello\nworld\n")
  with pytest.raises(DataError, match="<pad>"):
    text.Vocab.load(tmp_path / "bad.txt")
  with pytest.raises(DataError, match="not found"):
    text.Vocab.load(tmp_path / "none.txt")


def test_encode_pads_and_truncates():
  vocab = text.Vocab(["<pad>", "<unk>", "a", "b"])
  examples = [(["a", "b", "a", "b", "a"], 1), ([], 0), (["b", "zzz"], 1)]
  arrays = text.encode(examples, vocab, max_len=3)
  np.testing.assert_array_equal(arrays["tokens"], [[2, 3, 2], [0, 0, 0], [3, 1, 0]])
  np.testing.assert_array_equal(arrays["length"], [3, 0, 2])
  np.testing.assert_array_equal(arrays["label"], [1, 0, 1])
  assert all(a.dtype == np.int32 for a in arrays.values())
  assert text.longest(examples) == 5 and text.longest([]) == 0
  empty = text.encode([], vocab, max_len=4)
  assert empty["tokens"].shape == (0, 4)


# --------------------------------------------------------------------------
# TFDS (mocked: no download)


def test_tfds_mocked_imdb_and_glue():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=8):
    imdb = text.load_text_classification("tfds:imdb_reviews")
    glue = text.load_text_classification("tfds:glue/sst2", tokenizer="whitespace")
  assert imdb.name == "tfds:imdb_reviews" and imdb.num_classes == 2
  assert imdb.class_names == ["neg", "pos"]
  assert len(imdb.train) == 8 and len(imdb.test) == 8
  assert glue.num_classes == 2 and len(glue.train) == 8 and len(glue.valid) == 8
  for tokens, label in imdb.train + glue.train:
    assert label in (0, 1) and all(isinstance(t, str) for t in tokens)


def test_tfds_drops_unlabelled_examples():
  tfds = pytest.importorskip("tensorflow_datasets")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def as_dataset(self, split, **kwargs):
    del self, kwargs
    labels = [-1, -1] if str(split) == "test" else [1, 0]  # GLUE hides test labels as -1
    return tf.data.Dataset.from_tensor_slices({
        "sentence": ["Good film", "caf\xe9 bad"], "label": tf.constant(labels, tf.int64),
        "idx": tf.constant([0, 1], tf.int32)})

  with tfds.testing.mock_data(num_examples=2, as_dataset_fn=as_dataset):
    glue = text.load_text_classification("tfds:glue/sst2")
  assert glue.train == [(["good", "film"], 1), (["caf", "bad"], 0)]
  assert glue.test is None  # every label was -1


def test_tfds_unknown_dataset():
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(DataError, match="no_such_dataset_xyz"):
    text.load_text_classification("tfds:no_such_dataset_xyz")
