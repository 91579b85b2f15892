"""From a Config to arrays the trainer can batch: load once, then prepare per CV fold.

Each model family names a data kind (family.DATA); the kind's module provides
  load_raw(cfg) -> raw splits          (read files / download / tfds, once)
  prepare(raw, cfg, fold) -> Data      (split, vocabulary, encode; once per CV fold)
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np

from nets import models
from nets.config import Config

DATA_KINDS = {
    "text": "nets.data.text",
    "chars": "nets.data.chars",
    "image": "nets.data.images",
    "translation": "nets.data.translation",
}


@dataclasses.dataclass
class Data:
  """Prepared splits (dicts of equal-length numpy arrays) and what models need to know."""

  train: dict | None
  valid: dict | None
  test: dict | None
  num_classes: int = 0
  num_outputs: int = 0
  name: str = ""
  vocab: Any = None
  max_len: int = 0
  pretrained: np.ndarray | None = None
  class_names: list | None = None
  shuffle: bool = True             # False: batches in order (streams for truncated BPTT)
  info: dict = dataclasses.field(default_factory=dict)  # kind-specific, saved in data.json

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def describe(self) -> dict:
    """What evaluation needs to rebuild the model and encode new data (data.json)."""
    return {"name": self.name, "num_classes": self.num_classes,
            "num_outputs": self.num_outputs, "max_len": self.max_len,
            "vocab_size": len(self.vocab) if self.vocab is not None else 0,
            "class_names": self.class_names, "shuffle": self.shuffle, "info": self.info,
            "embed_dim": None if self.pretrained is None else int(self.pretrained.shape[1]),
            "sizes": {s: int(len(next(iter(a.values())))) for s in ("train", "valid", "test")
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
               class_names=info.get("class_names"), shuffle=info.get("shuffle", True),
               info=info.get("info", {}))


def kind(cfg: Config):
  return importlib.import_module(DATA_KINDS[models.get(cfg.model).DATA])


def load_raw(cfg: Config):
  """Reads the dataset named by cfg (files, download or tfds) without preparing it."""
  return kind(cfg).load_raw(cfg)


def prepare(raw, cfg: Config, fold: int = 0) -> Data:
  return kind(cfg).prepare(raw, cfg, fold)
