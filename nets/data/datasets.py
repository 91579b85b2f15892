"""From a Config to arrays the trainer can batch: load once, then prepare per CV fold."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from nets import losses
from nets.config import Config
from nets.data import text
from nets.errors import ConfigError, DataError

MAX_LEN_CAP = 512


@dataclasses.dataclass
class Data:
  """Prepared splits (dicts of equal-length numpy arrays) and what models need to know."""

  train: dict
  valid: dict | None
  test: dict | None
  num_classes: int
  num_outputs: int
  name: str = ""
  vocab: Any = None
  max_len: int = 0
  pretrained: np.ndarray | None = None
  class_names: list | None = None

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def describe(self) -> dict:
    """What evaluation needs to rebuild the model and encode new data (data.json)."""
    return {"name": self.name, "num_classes": self.num_classes,
            "num_outputs": self.num_outputs, "max_len": self.max_len,
            "vocab_size": len(self.vocab) if self.vocab is not None else 0,
            "class_names": self.class_names,
            "embed_dim": None if self.pretrained is None else int(self.pretrained.shape[1]),
            "sizes": {s: int(len(a["label"])) for s in ("train", "valid", "test")
                      if (a := getattr(self, s)) is not None}}

  @classmethod
  def from_description(cls, info: dict, vocab=None) -> "Data":
    """A Data without examples, shaped like the one a run trained on."""
    pretrained = None
    if info.get("embed_dim"):  # restored params replace these zeros
      pretrained = np.zeros((info["vocab_size"], info["embed_dim"]), np.float32)
    return cls(train=None, valid=None, test=None, num_classes=info["num_classes"],
               num_outputs=info["num_outputs"], name=info.get("name", ""), vocab=vocab,
               max_len=info["max_len"], pretrained=pretrained,
               class_names=info.get("class_names"))


def load_raw(cfg: Config):
  """Reads the dataset named by cfg (files, download or tfds) without preparing it."""
  return text.load_text_classification(
      cfg.dataset, data_dir=cfg.data_dir or None, mirror=cfg.data_mirror or None,
      train_file=cfg.train_file or None, valid_file=cfg.valid_file or None,
      test_file=cfg.test_file or None, tokenizer=cfg.tokenizer, phrases=cfg.phrases)


def prepare(raw, cfg: Config, fold: int = 0) -> Data:
  """Splits, builds the vocabulary from training data only, pads to a static length."""
  splits = text.make_splits(raw, seed=cfg.seed, valid_fraction=cfg.valid_fraction,
                            test_fraction=cfg.test_fraction, cv_folds=cfg.cv_folds, fold=fold)
  if cfg.loss == "sigmoid_xent" and raw.num_classes != 2:
    raise ConfigError(f"--loss=sigmoid_xent needs a binary dataset ({cfg.dataset} has "
                      f"{raw.num_classes} classes): use softmax_xent or hinge")
  vocab = text.Vocab.from_examples(splits.train, min_freq=cfg.min_freq)
  max_len = cfg.max_len or min(max(text.longest(splits.train), 1), MAX_LEN_CAP)
  encode = lambda ex: text.encode(ex, vocab, max_len) if ex else None
  return Data(train=encode(splits.train), valid=encode(splits.valid), test=encode(splits.test),
              num_classes=raw.num_classes,
              num_outputs=losses.num_outputs(cfg.loss, raw.num_classes),
              name=cfg.dataset, vocab=vocab, max_len=max_len,
              pretrained=pretrained_table(cfg, vocab), class_names=raw.class_names)


def pretrained_table(cfg: Config, vocab) -> np.ndarray | None:
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


def encode_file(path: str, cfg: Config, vocab, max_len: int) -> dict:
  """A label-first file encoded with a trained run's tokenizer and vocabulary."""
  if not os.path.exists(path):
    raise DataError(f"test file not found: {path} (--test_file)")
  keep_case = cfg.dataset == "trec" and cfg.tokenizer == "kim"
  examples = text.read_label_first(path, cfg.tokenizer, keep_case=keep_case)
  if not examples:
    raise DataError(f"no examples in {path}: expected '<label> <sentence>' lines")
  return text.encode(examples, vocab, max_len)
