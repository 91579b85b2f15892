"""The "chars" data kind: plain text for character language models, as truncated-BPTT streams.

Sources: `tiny_shakespeare` (Karpathy's char-rnn file, located by nets.data.sources:
local copy, cache or checked download), `tfds:tiny_shakespeare` (or any TFDS dataset
whose examples hold one "text" string), or any text file (`--train_file`, optionally
`--valid_file` / `--test_file`). Without a validation file, the last `--valid_fraction`
of the training text (by position, as nanoGPT: 10% by default) is the validation text.

Layout for truncated BPTT with B = batch_size streams and T = bptt: the text is cut into
B contiguous streams; row w*B + i of the arrays is window w of stream i, so that with
unshuffled batches (Data.shuffle=False) row i of batch s+1 continues row i of batch s
and the carried hidden state lines up. Arrays: tokens (inputs) and targets (the next
character), int32 [N, T]. Training drops the ragged end; evaluation splits cover every
character exactly once and mark padding with weight 0.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib

import numpy as np

from nets.data import sources
from nets.errors import ConfigError, DataError

TINY_SHAKESPEARE = "tinyshakespeare/input.txt"
sources.register(sources.RemoteFile(
    path=TINY_SHAKESPEARE,
    url=("https://raw.githubusercontent.com/karpathy/char-rnn/"
         "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt"),
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"))

DATASETS = ("tiny_shakespeare", "tfds:tiny_shakespeare", "file")
UNK = "<unk>"  # id 0; a multi-character string, so no character can collide with it


@dataclasses.dataclass
class TextSplits:
  train: str
  valid: str | None
  test: str | None
  name: str = ""


class CharVocab:
  """Characters <-> ids; id 0 is <unk>, for characters never seen in training."""

  def __init__(self, itos):
    if not itos or itos[0] != UNK:
      raise DataError(f"a character vocabulary must start with {UNK}")
    self.itos = list(itos)
    self.stoi = {c: i for i, c in enumerate(self.itos)}

  @classmethod
  def from_text(cls, text: str) -> "CharVocab":
    return cls([UNK, *sorted(set(text))])

  def encode(self, text: str) -> np.ndarray:
    stoi = self.stoi
    return np.fromiter((stoi.get(c, 0) for c in text), np.int32, count=len(text))

  def decode(self, ids) -> str:
    return "".join(self.itos[int(i)] if int(i) else "\ufffd" for i in ids)

  def __len__(self) -> int:
    return len(self.itos)


def read_text(path: str | os.PathLike, what: str = "text file") -> str:
  """A whole file as text: UTF-8, else Latin-1 (which decodes any byte)."""
  try:
    data = pathlib.Path(path).read_bytes()
  except FileNotFoundError:
    raise DataError(f"{what} not found: {path}") from None
  except OSError as e:
    raise DataError(f"cannot read {what} {path} ({e.strerror or e})") from None
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return data.decode("latin-1")


def split_by_position(text: str, valid_fraction: float) -> tuple[str, str]:
  """(first 1 - fraction, last fraction) of the characters, as nanoGPT's 90/10 split."""
  cut = int(len(text) * (1.0 - valid_fraction))
  return text[:cut], text[cut:]


# --- arrays --------------------------------------------------------------------------------

def training_windows(ids: np.ndarray, streams: int, bptt: int) -> dict:
  """B streams cut into T-char windows, rows ordered (window, stream); ragged end dropped."""
  inputs, targets = ids[:-1], ids[1:]
  windows = (len(inputs) // streams) // bptt
  if windows < 1:
    raise DataError(f"the training text has {len(ids)} characters: too short for "
                    f"--batch_size={streams} streams of --bptt={bptt} characters; lower "
                    "them or use a longer text")
  return {"tokens": _window_rows(inputs, streams, bptt, windows),
          "targets": _window_rows(targets, streams, bptt, windows)}


def evaluation_windows(ids: np.ndarray, streams: int, bptt: int) -> dict:
  """Like training_windows, but every next-char target is kept exactly once: streams and
  windows are padded at their end, and `weight` is 1 at the real targets only."""
  n = len(ids) - 1
  if n < 1:
    raise DataError("a text needs at least 2 characters to predict one")
  stream_len = math.ceil(n / streams)
  windows = math.ceil(stream_len / bptt)

  def rows(x: np.ndarray) -> np.ndarray:
    padded = np.zeros(streams * stream_len, x.dtype)
    padded[:n] = x
    padded = np.pad(padded.reshape(streams, stream_len),
                    ((0, 0), (0, windows * bptt - stream_len)))
    return _window_rows(padded.reshape(-1), streams, bptt, windows)

  return {"tokens": rows(ids[:-1]), "targets": rows(ids[1:]),
          "weight": rows(np.ones(n, np.float32))}


def _window_rows(x: np.ndarray, streams: int, bptt: int, windows: int) -> np.ndarray:
  stream_len = len(x) // streams
  x_BxW = x[:streams * stream_len].reshape(streams, stream_len)[:, :windows * bptt]
  # [B, windows, T] -> [windows, B, T]: consecutive batches continue each row.
  return np.ascontiguousarray(
      x_BxW.reshape(streams, windows, bptt).transpose(1, 0, 2).reshape(-1, bptt))


# --- the "chars" data kind (see nets.data.datasets) ----------------------------------------

def load_raw(cfg) -> TextSplits:
  name = cfg.dataset
  if name == "file":
    if not cfg.train_file:
      raise ConfigError("--dataset=file needs --train_file=PATH (any text file)")
    train = read_text(cfg.train_file, "training file (--train_file)")
    valid = read_text(cfg.valid_file, "validation file (--valid_file)") if cfg.valid_file \
        else None
    test = read_text(cfg.test_file, "test file (--test_file)") if cfg.test_file else None
    if valid is None:
      train, valid = split_by_position(train, cfg.valid_fraction)
    return TextSplits(train, valid, test, name="file")
  if name == "tiny_shakespeare":
    path = sources.resolve(TINY_SHAKESPEARE, data_dir=cfg.data_dir or None,
                           mirror=cfg.data_mirror or None)
    train, valid = split_by_position(read_text(path), cfg.valid_fraction)
    return TextSplits(train, valid, None, name=name)
  if name.startswith("tfds:"):
    return _load_tfds(name[len("tfds:"):], cfg.data_dir or None)
  raise ConfigError(f"--dataset={name}: a character language model reads "
                    f"{', '.join(DATASETS[:2])}, tfds:NAME (a text dataset) or "
                    "--train_file=PATH")


def _load_tfds(name: str, data_dir: str | None) -> TextSplits:
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise ConfigError(f"--dataset=tfds:{name} needs tensorflow-datasets: pip install "
                      "tensorflow tensorflow-datasets, or use --dataset=tiny_shakespeare"
                      ) from None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()
    splits = {}
    for split in ("train", "validation", "test"):
      try:
        examples = tfds.as_numpy(builder.as_dataset(split=split))
      except (KeyError, ValueError):
        splits[split] = None
        continue
      splits[split] = "".join(_decode(ex["text"]) for ex in examples)
  except Exception as e:  # tfds raises many types (network, missing data, bad names)
    raise DataError(f"--dataset=tfds:{name}: {' '.join(str(e).split())[:300]}") from None
  if not splits.get("train"):
    raise DataError(f"--dataset=tfds:{name} has no train split with a 'text' feature")
  return TextSplits(splits["train"], splits["validation"], splits["test"], name=f"tfds:{name}")


def _decode(value) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def prepare(raw: TextSplits, cfg, fold: int = 0):
  """Vocabulary from the training text only; training and evaluation windows."""
  from nets.data.datasets import Data
  del fold  # no cross-validation for language models
  vocab = CharVocab.from_text(raw.train)
  streams, bptt = cfg.batch_size, cfg.model_config.bptt
  evaluation = lambda text: (evaluation_windows(vocab.encode(text), streams, bptt)
                             if text and len(text) > 1 else None)
  return Data(train=training_windows(vocab.encode(raw.train), streams, bptt),
              valid=evaluation(raw.valid), test=evaluation(raw.test),
              num_outputs=len(vocab), name=raw.name, vocab=None, max_len=bptt,
              shuffle=False,
              info={"vocabulary": vocab.itos, "streams": streams, "bptt": bptt,
                    "characters": {"train": len(raw.train),
                                   "valid": len(raw.valid or ""),
                                   "test": len(raw.test or "")}})


def vocabulary(data) -> CharVocab:
  """The run's character vocabulary (saved in data.json, as characters may be '\\n')."""
  return CharVocab(data.info["vocabulary"])


def encode_file(path: str, data, cfg=None) -> dict:
  """Any text file as evaluation windows of a trained run (unseen characters -> <unk>)."""
  del cfg
  if not os.path.exists(path):
    raise DataError(f"test file not found: {path} (--test_file)")
  text = read_text(path, "test file (--test_file)")
  if len(text) < 2:
    raise DataError(f"{path} has {len(text)} characters: a text needs at least 2 to "
                    "predict one")
  return evaluation_windows(vocabulary(data).encode(text), data.info["streams"],
                            data.info["bptt"])
