"""Sentence-classification data: Kim (2014) benchmarks, user files and TFDS.

Everything here is plain Python + numpy; TensorFlow is imported only for
``tfds:`` datasets. An example is ``(tokens, label)``. Typical use::

  splits = load_text_classification("sst2")
  splits = make_splits(splits, seed=0)            # carve dev/test where missing
  vocab = Vocab.from_examples(splits.train)       # train only: no test leakage
  train = encode(splits.train, vocab, max_len=longest(splits.train))

Kim's benchmarks come as label-first files (``<label> <sentence>``) located by
`nets.data.sources.resolve`; SST training data is the labelled phrases of the
SST parse trees, as in Kim (2014).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import re
from typing import Iterator, Sequence

import numpy as np

from nets.data import sources
from nets.errors import ConfigError, DataError

Example = tuple[list[str], int]  # (tokens, label)


@dataclasses.dataclass
class TextSplits:
  """Train/valid/test examples of one classification dataset."""

  train: list[Example]
  valid: list[Example] | None  # None if the dataset has no dev split
  test: list[Example] | None  # None if the dataset has no test split (MR, Subj)
  num_classes: int
  class_names: list[str] | None = None
  name: str = ""


KIM_DATASETS = ("mr", "sst1", "sst2", "subj", "trec")
TOKENIZERS = ("kim", "whitespace", "lower")

_TC = "text_classification"
# name -> (train, dev, test) paths in the data layout (None: no such split),
# number of classes, class names.
_KIM_FILES = {
    "mr": ((f"{_TC}/mr/rt-polarity.all", None, None), ["negative", "positive"]),
    "subj": ((f"{_TC}/subj/subj.all", None, None), ["subjective", "objective"]),
    "trec": ((f"{_TC}/trec/TREC.train.all", None, f"{_TC}/trec/TREC.test.all"),
             ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]),
    "sst2": ((f"{_TC}/sst2/stsa.binary.train", f"{_TC}/sst2/stsa.binary.dev",
              f"{_TC}/sst2/stsa.binary.test"), ["negative", "positive"]),
    "sst1": ((f"{_TC}/sst1/stsa.fine.train", f"{_TC}/sst1/stsa.fine.dev",
              f"{_TC}/sst1/stsa.fine.test"),
             ["very negative", "negative", "neutral", "positive", "very positive"]),
}
SST_TRAIN_TREES = f"{_TC}/sst_trees/train.txt"

# --------------------------------------------------------------------------
# Tokenization

# Kim's clean_str (CNN_sentence/process_data.py), reduced from 12 sequential
# re.sub calls to 3 passes with the same output: the contraction patterns
# cannot overlap each other, nor can the punctuation ones. It is
# case-sensitive before lower-casing (``N'T`` is not split), as in Kim's code.
_KIM_DROP = re.compile(r"[^A-Za-z0-9(),!?'`]")
_KIM_CONTRACTION = re.compile(r"'s|'ve|n't|'re|'d|'ll")
_KIM_PUNCT = re.compile(r"[,!()?]")


def tokenize(text: str, tokenizer: str, *, keep_case: bool = False) -> list[str]:
  """Splits one sentence into tokens.

  Args:
    text: the sentence.
    tokenizer: "kim" (Yoon Kim's clean_str: keeps only ASCII letters, digits
      and ``(),!?'` ``, splits off 's 've n't 're 'd 'll and , ! ( ) ?, then
      lower-cases unless `keep_case`), "whitespace" (split on whitespace only)
      or "lower" (whitespace split, lower-cased).
    keep_case: for "kim" only: keep the original case (Kim does so for TREC).

  Kim's script writes brackets and "?" as ``\\(`` ``\\)`` ``\\?`` tokens (its
  re.sub replacement strings keep the backslash); here they are plain
  ``(`` ``)`` ``?``, which changes token spelling only, never the split.
  """
  if tokenizer == "kim":
    text = _KIM_DROP.sub(" ", text)
    text = _KIM_CONTRACTION.sub(r" \g<0>", text)
    text = _KIM_PUNCT.sub(r" \g<0> ", text)
    return text.split() if keep_case else text.lower().split()
  if tokenizer == "whitespace":
    return text.split()
  if tokenizer == "lower":
    return text.lower().split()
  raise ConfigError(f"unknown tokenizer {tokenizer!r}; use one of {', '.join(TOKENIZERS)}")


# --------------------------------------------------------------------------
# Label-first files


def _decode_line(raw: bytes) -> str:
  # Files mix encodings (MR/Subj/TREC-train are Latin-1, SST is UTF-8); per
  # line, UTF-8 is tried first and Latin-1, which decodes any byte, is the
  # fallback.
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    return raw.decode("latin-1")


def _label_first_lines(path: str | os.PathLike) -> Iterator[tuple[int, str, int]]:
  """Yields (label, sentence text, 1-based line number) of a label-first file."""
  path = pathlib.Path(path)
  try:
    data = path.read_bytes()
  except FileNotFoundError as e:
    raise DataError(f"data file not found: {path}") from e
  except OSError as e:
    raise DataError(f"cannot read data file {path} ({e.strerror or e})") from e
  # Split on b"\n" only: MR and Subj contain byte 0x85, which str.splitlines()
  # would treat as a line break (U+0085 NEL) and so cut sentences in two.
  for number, raw in enumerate(data.split(b"\n"), start=1):
    line = _decode_line(raw.rstrip(b"\r"))
    if not line.strip():
      continue
    label_text, _, sentence = line.lstrip(" \t").partition(" ")
    try:
      label = int(label_text)
    except ValueError:
      raise DataError(
          f"{path} line {number}: label {label_text[:30]!r} is not an integer; each line must "
          "be '<integer label> <sentence>'") from None
    yield label, sentence, number


def read_label_first(path: str | os.PathLike,
                     tokenizer: str = "kim",
                     keep_case: bool = False) -> list[Example]:
  """Reads a ``<label> <sentence>`` file, one example per line.

  Bytes are decoded per line (UTF-8, else Latin-1, so decoding never fails);
  lines are split on ``\\n`` only; blank lines are skipped; a line holding only
  a label is kept as an example with no tokens.

  Raises:
    DataError: the file is missing or a label is not an integer.
  """
  return [(tokenize(sentence, tokenizer, keep_case=keep_case), label)
          for label, sentence, _ in _label_first_lines(path)]


# --------------------------------------------------------------------------
# SST parse trees

_TREE_TOKEN = re.compile(r"\(|\)|[^\s()]+")
# PTB escapes for round brackets; the trees and the stsa.* files both use them.
_PTB_BRACKETS = {"-lrb-": "(", "-rrb-": ")"}


def _sst_words(text: str) -> str:
  """Lower-cases SST text and writes PTB bracket escapes as brackets."""
  return " ".join(_PTB_BRACKETS.get(w, w) for w in text.lower().split())


def _binary_label(fine_label: int) -> int | None:
  """SST-5 label -> SST-2 label (0,1 -> 0; 3,4 -> 1; neutral 2 -> None)."""
  return None if fine_label == 2 else int(fine_label > 2)


def _tree_phrases(line: str, path, number: int) -> list[tuple[str, int]]:
  """Every node of one PTB tree as (phrase, fine label), children before parents."""
  tokens = _TREE_TOKEN.findall(line)
  phrases = []
  stack: list[tuple[int, list[str]]] = []  # open nodes: (label, leaves so far)
  i = 0
  try:
    while i < len(tokens):
      token = tokens[i]
      if token == "(":
        stack.append((int(tokens[i + 1]), []))
        i += 2
        continue
      if token == ")":
        label, leaves = stack.pop()
        phrases.append((" ".join(leaves), label))
        if stack:
          stack[-1][1].extend(leaves)
      else:
        stack[-1][1].append(_PTB_BRACKETS.get(token, token))
      i += 1
  except (IndexError, ValueError):
    stack.append((0, []))  # mark as malformed
  if stack or not phrases:
    raise DataError(
        f"{path} line {number}: not a PTB tree like '(3 (2 a) (4 b))'; use the SST "
        "trainDevTestTrees_PTB files")
  return phrases


def read_sst_phrases(tree_path: str | os.PathLike,
                     fine: bool,
                     *,
                     tokenizer: str | None = None,
                     keep_case: bool = False) -> list[Example]:
  """Reads every labelled phrase of SST parse trees (one tree per line).

  Each node ``(label children-or-token)`` gives one example: its leaves joined,
  lower-cased, with ``-lrb-``/``-rrb-`` written as ``(``/``)``. Kim (2014)
  trains SST models on these phrases (tokens and whole sentences included) and
  tests on sentences. Identical phrases are kept once, with the label of their
  first occurrence (nodes are visited tree by tree, children before parents).

  Args:
    tree_path: a trainDevTestTrees_PTB file.
    fine: True for the 5 SST-1 labels; False for SST-2 (0,1 -> 0; 3,4 -> 1;
      neutral phrases dropped).
    tokenizer: None keeps the tree's leaves as tokens. Otherwise the phrase is
      re-tokenized with `tokenize` so training phrases match sentences
      tokenized the same way, and phrases left with no tokens (e.g. a lone
      ".") are dropped.
    keep_case: passed to `tokenize`.
  """
  path = pathlib.Path(tree_path)
  try:
    text = path.read_bytes().decode("utf-8", errors="replace")
  except FileNotFoundError as e:
    raise DataError(f"SST tree file not found: {path}") from e
  seen: set[str] = set()
  examples: list[Example] = []
  for number, line in enumerate(text.lower().split("\n"), start=1):
    if not line.strip():
      continue
    for phrase, label in _tree_phrases(line, path, number):
      if not fine:
        label = _binary_label(label)
        if label is None:
          continue
      if phrase in seen:
        continue
      seen.add(phrase)
      if tokenizer is None:
        tokens = phrase.split()
      else:
        tokens = tokenize(phrase, tokenizer, keep_case=keep_case)
        if not tokens:
          continue
      examples.append((tokens, label))
  return examples


# --------------------------------------------------------------------------
# Loading datasets by name


def load_text_classification(name: str,
                             *,
                             data_dir: str | None = None,
                             mirror: str | None = None,
                             cache_dir: str | None = None,
                             train_file: str | None = None,
                             valid_file: str | None = None,
                             test_file: str | None = None,
                             tokenizer: str = "kim",
                             phrases: bool = True) -> TextSplits:
  """Loads a sentence-classification dataset.

  Args:
    name: one of `KIM_DATASETS`; "file" for label-first files given by
      `train_file` (required), `valid_file`, `test_file`; or "tfds:NAME" for a
      TensorFlow Datasets dataset with a text and a ClassLabel feature (e.g.
      "tfds:imdb_reviews", "tfds:glue/sst2").
    data_dir: for Kim datasets, a folder laid out like the shared data folder
      (default ``$NETS_DATA_DIR``, then the download cache, then download; see
      `nets.data.sources.resolve`). For tfds, its data_dir (default: tfds's).
    mirror, cache_dir: see `nets.data.sources.resolve`.
    tokenizer: one of `TOKENIZERS`. With "kim", TREC keeps its case, as in Kim.
    phrases: sst1/sst2 only: train on all labelled phrases of the SST training
      trees (Kim 2014) instead of the training sentences. Dev and test are
      sentences either way.

  Returns:
    The splits as stored; `valid`/`test` are None where the dataset has none
    (use `make_splits` to carve them).
  """
  if tokenizer not in TOKENIZERS:
    raise ConfigError(f"unknown tokenizer {tokenizer!r}; use one of {', '.join(TOKENIZERS)}")
  if name != "file" and (train_file or valid_file or test_file):
    raise ConfigError("--train_file/--valid_file/--test_file are only used with --dataset=file")
  if name in _KIM_FILES:
    return _load_kim(name, data_dir=data_dir, mirror=mirror, cache_dir=cache_dir,
                     tokenizer=tokenizer, phrases=phrases)
  if name == "file":
    return _load_files(train_file, valid_file, test_file, tokenizer)
  if name.startswith("tfds:") and len(name) > len("tfds:"):
    return _load_tfds(name[len("tfds:"):], data_dir=data_dir, tokenizer=tokenizer)
  raise DataError(
      f"unknown dataset {name!r}; use one of {', '.join(KIM_DATASETS)}, file (with "
      "--train_file) or tfds:NAME (e.g. tfds:imdb_reviews)")


def _check_labels(examples: Sequence[Example], num_classes: int, what: str) -> None:
  bad = [label for _, label in examples if not 0 <= label < num_classes]
  if bad:
    raise DataError(
        f"{what}: label {bad[0]} is outside 0..{num_classes - 1}; labels must be integers "
        f"0..K-1 (check the file, or its checksum against the data README)")


def _load_kim(name, *, data_dir, mirror, cache_dir, tokenizer, phrases) -> TextSplits:
  paths, class_names = _KIM_FILES[name]
  keep_case = name == "trec" and tokenizer == "kim"
  is_sst = name in ("sst1", "sst2")

  def read(layout_path):
    if layout_path is None:
      return None
    local = sources.resolve(layout_path, data_dir=data_dir, mirror=mirror, cache_dir=cache_dir)
    if not is_sst:
      return read_label_first(local, tokenizer, keep_case)
    # Same bracket handling as the tree phrases, so train and test agree.
    return [(tokenize(_sst_words(sentence), tokenizer, keep_case=keep_case), label)
            for label, sentence, _ in _label_first_lines(local)]

  train_path, valid_path, test_path = paths
  if is_sst and phrases:
    trees = sources.resolve(SST_TRAIN_TREES, data_dir=data_dir, mirror=mirror,
                            cache_dir=cache_dir)
    train = read_sst_phrases(trees, fine=name == "sst1", tokenizer=tokenizer,
                             keep_case=keep_case)
  else:
    train = read(train_path)
  splits = TextSplits(train=train, valid=read(valid_path), test=read(test_path),
                      num_classes=len(class_names), class_names=list(class_names), name=name)
  for split in ("train", "valid", "test"):
    examples = getattr(splits, split)
    if examples is not None:
      _check_labels(examples, splits.num_classes, f"{name} {split}")
  return splits


def _load_files(train_file, valid_file, test_file, tokenizer) -> TextSplits:
  if not train_file:
    raise ConfigError("--dataset=file needs --train_file=PATH (a '<label> <sentence>' file)")
  loaded = {}
  for split, path in (("train", train_file), ("valid", valid_file), ("test", test_file)):
    if not path:
      loaded[split] = None
      continue
    if not pathlib.Path(path).is_file():
      raise DataError(f"{split} file not found: {path}")
    loaded[split] = read_label_first(path, tokenizer)
  if not loaded["train"]:
    raise DataError(f"train file {train_file} holds no examples; each line must be "
                    "'<integer label> <sentence>'")
  labels = [label for examples in loaded.values() if examples for _, label in examples]
  if min(labels) < 0:
    raise DataError(f"negative label {min(labels)} in --dataset=file data; labels must be "
                    "integers 0..K-1")
  return TextSplits(train=loaded["train"], valid=loaded["valid"], test=loaded["test"],
                    num_classes=max(labels) + 1, name="file")


def _load_tfds(dataset: str, *, data_dir, tokenizer) -> TextSplits:
  """Loads a TFDS text-classification dataset (see load_text_classification)."""
  tfds, builder = sources.tfds_builder(dataset, data_dir)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top (already loaded above)

  text_key, label_key = _tfds_feature_keys(builder.info.features, tfds, tf, dataset)
  label_feature = builder.info.features[label_key]


  def read(split: str) -> list[Example] | None:
    ds = sources.tfds_split(builder, split)
    if ds is None:
      return None
    # Batches of 4096, not batch_size=-1: the latter needs the split size,
    # which is unknown when info.splits is empty (it would try to allocate
    # sys.maxsize elements).
    ds = ds.map(lambda ex: (ex[text_key], ex[label_key])).batch(4096)
    examples = []
    for texts, labels in tfds.as_numpy(ds):
      for text, label in zip(texts, labels):
        if label < 0:  # e.g. GLUE test sets: label -1 = hidden
          continue
        text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
        examples.append((tokenize(text, tokenizer), int(label)))
    return examples or None

  train = read("train")
  if not train:
    raise DataError(f"tfds dataset {dataset!r} has no labelled 'train' split")
  splits = TextSplits(train=train, valid=read("validation"), test=read("test"),
                      num_classes=int(label_feature.num_classes),
                      class_names=list(label_feature.names), name=f"tfds:{dataset}")
  return splits


def _tfds_feature_keys(features, tfds, tf, dataset: str) -> tuple[str, str]:
  """(text feature key, ClassLabel feature key) of a tfds FeaturesDict."""

  def is_text(feature) -> bool:
    if isinstance(feature, tfds.features.Text):
      return True
    if isinstance(feature, tfds.features.Tensor):
      try:
        return tf.as_dtype(feature.dtype) == tf.string and tuple(feature.shape) == ()
      except TypeError:
        return False
    return False

  items = list(features.items())
  preferred = {"sentence": 0, "text": 1}
  texts = sorted((key for key, f in items if is_text(f)), key=lambda k: preferred.get(k, 2))
  labels = [key for key, f in items if isinstance(f, tfds.features.ClassLabel)]
  labels.sort(key=lambda k: k != "label")
  if not texts or not labels:
    raise DataError(
        f"tfds dataset {dataset!r} needs a text feature and a ClassLabel feature for sentence "
        f"classification; it has {', '.join(k for k, _ in items)}")
  return texts[0], labels[0]


# --------------------------------------------------------------------------
# Splitting


def _check_fraction(fraction: float, what: str) -> None:
  if not 0.0 < fraction < 1.0:
    raise ConfigError(f"{what} must be between 0 and 1 (exclusive), got {fraction}")


def split_off(examples: Sequence, fraction: float, seed: int) -> tuple[list, list]:
  """Holds out a seeded random `fraction` of `examples`.

  Returns (rest, held_out); round(fraction * n) examples (at least 1, at most
  n - 1) are held out. Both parts keep the input order.
  """
  _check_fraction(fraction, "fraction")
  n = len(examples)
  if n < 2:
    raise DataError(f"cannot hold out a fraction of {n} example(s); the dataset needs at "
                    "least 2 training examples")
  held = min(max(1, round(fraction * n)), n - 1)
  chosen = np.zeros(n, dtype=bool)
  chosen[np.random.default_rng(seed).permutation(n)[:held]] = True
  rest = [ex for ex, c in zip(examples, chosen) if not c]
  held_out = [ex for ex, c in zip(examples, chosen) if c]
  return rest, held_out


def cv_fold_ids(n: int, k: int, seed: int) -> np.ndarray:
  """The cross-validation fold (0..k-1) of each of n examples, as int array [n].

  A seeded permutation dealt round-robin, so fold sizes differ by at most 1.
  """
  if not 2 <= k <= n:
    raise ConfigError(f"cross-validation needs 2 <= folds <= examples, got {k} folds for "
                      f"{n} examples")
  folds = np.empty(n, dtype=np.int64)
  folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
  return folds


def make_splits(splits: TextSplits,
                *,
                seed: int,
                valid_fraction: float = 0.1,
                test_fraction: float = 0.1,
                cv_folds: int = 0,
                fold: int = 0) -> TextSplits:
  """Fills in missing test/valid splits, deterministically in `seed`.

  * cv_folds > 0 (datasets without a test split, e.g. MR and Subj, which Kim
    evaluates by 10-fold CV): test = fold `fold` of train, train = the others.
  * else, if there is no test split: test_fraction of train is held out.
  * then, if there is no valid split: valid_fraction of the remaining train is
    held out (Kim: 10% of train as dev where none is given).
  """
  train, valid, test = splits.train, splits.valid, splits.test
  if cv_folds:
    if test is not None:
      raise DataError(
          f"--cv_folds is for datasets without a test split; {splits.name or 'this dataset'} "
          "has one, so use --cv_folds=0")
    if cv_folds < 2 or not 0 <= fold < cv_folds:
      raise ConfigError(f"need cv_folds >= 2 and 0 <= fold < cv_folds, got cv_folds={cv_folds} "
                        f"fold={fold}")
    fold_ids = cv_fold_ids(len(train), cv_folds, seed)
    test = [ex for ex, f in zip(train, fold_ids) if f == fold]
    train = [ex for ex, f in zip(train, fold_ids) if f != fold]
  elif test is None:
    _check_fraction(test_fraction, "test_fraction")
    train, test = split_off(train, test_fraction, seed)
  if valid is None:
    _check_fraction(valid_fraction, "valid_fraction")
    # A different stream than the test carve-out, so the two are independent.
    train, valid = split_off(train, valid_fraction, seed + 1_000_003)
  return dataclasses.replace(splits, train=train, valid=valid, test=test)


# --------------------------------------------------------------------------
# Vocabulary and arrays


class Vocab:
  """Token <-> id table with <pad> = 0 and <unk> = 1."""

  PAD, UNK = 0, 1
  PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"

  def __init__(self, itos: Sequence[str]):
    if list(itos[:2]) != [self.PAD_TOKEN, self.UNK_TOKEN]:
      raise DataError(f"a vocabulary must start with {self.PAD_TOKEN} and {self.UNK_TOKEN}")
    self.itos: list[str] = list(itos)
    self.stoi: dict[str, int] = {token: i for i, token in enumerate(self.itos)}
    if len(self.stoi) != len(self.itos):
      raise DataError("a vocabulary must not list a token twice")

  @classmethod
  def from_examples(cls, examples: Sequence[Example], min_freq: int = 1,
                    max_size: int = 0) -> "Vocab":
    """Builds a vocabulary from (training) examples.

    Tokens seen at least `min_freq` times, most frequent first (ties by
    token), at most `max_size` of them besides <pad> and <unk> (0: no limit).
    Build it from the training split only, so dev/test words stay unknown.
    """
    counts = collections.Counter(token for tokens, _ in examples for token in tokens)
    specials = (cls.PAD_TOKEN, cls.UNK_TOKEN)
    kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in specials),
                  key=lambda t: (-counts[t], t))
    if max_size > 0:
      kept = kept[:max_size]
    return cls([*specials, *kept])

  def encode(self, tokens: Sequence[str]) -> list[int]:
    stoi, unk = self.stoi, self.UNK
    return [stoi.get(t, unk) for t in tokens]

  def __len__(self) -> int:
    return len(self.itos)

  def __contains__(self, token: str) -> bool:
    return token in self.stoi

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocab) and self.itos == other.itos

  def save(self, path: str | os.PathLike) -> None:
    """Writes one token per line (UTF-8); line i is the token with id i."""
    if any("\n" in t or "\r" in t for t in self.itos):
      raise ValueError("tokens must not contain line breaks")
    pathlib.Path(path).write_text("".join(t + "\n" for t in self.itos), encoding="utf-8")

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Vocab":
    try:
      text = pathlib.Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError as e:
      raise DataError(f"vocabulary file not found: {path}") from e
    # split("\n"), not splitlines(): tokens may hold U+0085 and other
    # characters that splitlines() treats as line breaks.
    itos = text.split("\n")
    if itos and itos[-1] == "":
      itos.pop()
    return cls(itos)


def encode(examples: Sequence[Example], vocab: Vocab, max_len: int) -> dict[str, np.ndarray]:
  """Examples -> arrays: tokens int32 [N, max_len] (0-padded, truncated to
  max_len), length int32 [N] (= min(len, max_len)), label int32 [N]."""
  if max_len < 1:
    raise ConfigError(f"max_len must be at least 1, got {max_len}")
  n = len(examples)
  lengths = np.fromiter((min(len(t), max_len) for t, _ in examples), dtype=np.int32, count=n)
  labels = np.fromiter((label for _, label in examples), dtype=np.int32, count=n)
  stoi, unk = vocab.stoi, vocab.UNK
  flat = np.fromiter((stoi.get(t, unk) for tokens, _ in examples for t in tokens[:max_len]),
                     dtype=np.int32, count=int(lengths.sum()))
  # Scatter the flat ids into rows: row of each id, and its column = position
  # within its example.
  rows = np.repeat(np.arange(n), lengths)
  starts = np.cumsum(lengths) - lengths
  cols = np.arange(flat.size) - np.repeat(starts, lengths)
  tokens = np.zeros((n, max_len), dtype=np.int32)
  tokens[rows, cols] = flat
  return {"tokens": tokens, "length": lengths, "label": labels}


def longest(examples: Sequence[Example]) -> int:
  """Token count of the longest example (0 for none)."""
  return max((len(tokens) for tokens, _ in examples), default=0)


# --- the "text" data kind: from a Config to padded arrays (see nets.data.datasets) --------

MAX_LEN_CAP = 512


def load_raw(cfg) -> TextSplits:
  return load_text_classification(
      cfg.dataset, data_dir=cfg.data_dir or None, mirror=cfg.data_mirror or None,
      train_file=cfg.train_file or None, valid_file=cfg.valid_file or None,
      test_file=cfg.test_file or None, tokenizer=cfg.tokenizer, phrases=cfg.phrases)


def prepare(raw: TextSplits, cfg, fold: int = 0):
  """Splits, builds the vocabulary from training data only, pads to a static length."""
  from nets import losses
  from nets.data.datasets import Data
  splits = make_splits(raw, seed=cfg.data_seed, valid_fraction=cfg.valid_fraction,
                       test_fraction=cfg.test_fraction, cv_folds=cfg.cv_folds, fold=fold)
  if cfg.loss == "sigmoid_xent" and raw.num_classes != 2:
    raise ConfigError(f"--loss=sigmoid_xent needs a binary dataset ({cfg.dataset} has "
                      f"{raw.num_classes} classes): use softmax_xent or hinge")
  vocab = Vocab.from_examples(splits.train, min_freq=cfg.min_freq)
  max_len = cfg.max_len or min(max(longest(splits.train), 1), MAX_LEN_CAP)
  arrays = lambda examples: encode(examples, vocab, max_len) if examples else None
  return Data(train=arrays(splits.train), valid=arrays(splits.valid),
              test=arrays(splits.test), num_classes=raw.num_classes,
              num_outputs=losses.num_outputs(cfg.loss, raw.num_classes),
              name=cfg.dataset, vocab=vocab, max_len=max_len,
              pretrained=pretrained_table(cfg, vocab), class_names=raw.class_names,
              info={"tokenizer": cfg.tokenizer,
                    "keep_case": cfg.dataset == "trec" and cfg.tokenizer == "kim"})


def pretrained_table(cfg, vocab: Vocab) -> np.ndarray | None:
  """Word vectors for the vocabulary when the model asks for pretrained embeddings."""
  mc = cfg.model_config
  if getattr(mc, "embedding_mode", "rand") == "rand":
    return None
  from nets import embeddings  # only runs that use vectors pay for reading them
  table, found = embeddings.load_vectors(mc.embeddings, vocab.itos, mc.embeddings_format,
                                         seed=cfg.seed)
  if table.shape[1] != mc.embed_dim:
    raise ConfigError(f"--embed_dim={mc.embed_dim} but {mc.embeddings} has "
                      f"{table.shape[1]}-dimensional vectors: pass --embed_dim="
                      f"{table.shape[1]}")
  print(f"embeddings: {found}/{len(vocab)} vocabulary words found in {mc.embeddings}")
  return table


def encode_file(path: str, data, cfg=None) -> dict:
  """A label-first file encoded with a trained run's tokenizer, vocabulary and length."""
  if not os.path.exists(path):
    raise DataError(f"test file not found: {path} (--test_file)")
  examples = read_label_first(path, data.info.get("tokenizer", "kim"),
                              keep_case=data.info.get("keep_case", False))
  if not examples:
    raise DataError(f"no examples in {path}: expected '<label> <sentence>' lines")
  return encode(examples, data.vocab, data.max_len)
