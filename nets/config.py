"""The run configuration: one frozen object, built once from flags, saved as config.json.

Every field carries its help text and its allowed values in the dataclass metadata, so
flags, validation and documentation come from one place (`experiments/flags.py`
turns these fields into absl flags). Library code receives a `Config`; it never
reads flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from nets.errors import ConfigError


def option(default, help: str, *, choices=None, low=None, high=None, gt=None, of=int):
  """A config field with its flag help text and its allowed values.

  `of` is the element type of a tuple field (a comma-separated flag).
  """
  meta = dict(help=help, choices=choices, low=low, high=high, gt=gt, of=of)
  if isinstance(default, (list, tuple)):
    return dataclasses.field(default_factory=lambda: tuple(default), metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


def check(cfg) -> None:
  """Checks every field of a config dataclass against its metadata.

  Raises ConfigError naming the flag, the bad value and what is allowed.
  """
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    m = f.metadata
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
      if m.get("choices") is not None and v not in m["choices"]:
        raise ConfigError(
            f"--{f.name}={_show(value)}: must be one of {', '.join(map(str, m['choices']))}")
      if m.get("low") is not None and v < m["low"]:
        raise ConfigError(f"--{f.name}={_show(value)}: must be >= {m['low']}")
      if m.get("gt") is not None and v <= m["gt"]:
        raise ConfigError(f"--{f.name}={_show(value)}: must be > {m['gt']}")
      if m.get("high") is not None and v > m["high"]:
        raise ConfigError(f"--{f.name}={_show(value)}: must be <= {m['high']}")


def _show(value) -> str:
  return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", "adadelta")
LOSSES = ("softmax_xent", "sigmoid_xent", "hinge")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything about a run except the model's own hyperparameters (`model_config`)."""

  # What to train, on what, where.
  model: str = option("textcnn", "Model family to train (see nets.models.FAMILIES).")
  dataset: str = option(
      "sst2",
      "Dataset name. Sentence classifiers: mr, sst1, sst2, subj, trec; image models: "
      "mnist; language models: tiny_shakespeare; every family: 'file' (your files via "
      "--train_file/--valid_file/--test_file) or tfds:NAME for a TFDS dataset.")
  data_dir: str = option(
      "", "Local copy of the data, laid out like shared/data (default: $NETS_DATA_DIR, "
      "else download into the cache).")
  data_mirror: str = option(
      "", "Base URL of a mirror laid out like the data dir, used instead of the public "
      "sources (default: $NETS_DATA_MIRROR).")
  train_file: str = option("", "Label-first training file ('<label> <sentence>' per line).")
  valid_file: str = option("", "Label-first validation file (default: carved from training).")
  test_file: str = option("", "Label-first test file (optional).")
  workdir: str = option(
      "", "Directory for config, metrics, TensorBoard events and checkpoints "
      "(default: workdirs/MODEL-DATASET). Rerunning with the same workdir resumes.")
  seed: int = option(0, "Random seed for initialisation, dropout, data order and splits.", low=0)
  split_seed: int = option(
      -1, "Seed of the train/valid/test split and CV folds (-1: --seed). Fix it to vary "
      "only initialisation, dropout and data order between runs.", low=-1)

  # Data preparation.
  tokenizer: str = option("kim", "Tokenizer: kim (Kim 2014 clean_str), whitespace or lower.",
                          choices=("kim", "whitespace", "lower"))
  max_len: int = option(
      0, "Pad/truncate sentences to this many tokens (0: longest training sentence, "
      "capped at 512).", low=0)
  bucket_by_length: bool = option(
      True, "Batch sentences of similar length together and pad each batch only to its "
      "bucket (8, 16, 32, ... tokens): same results per sentence, much less padding.")
  batch_order: str = option(
      "reshuffle", "reshuffle: a new random order of the training examples every epoch "
      "(an epoch's remainder is dropped). fixed: Kim's code, one random partition into "
      "batches kept for the whole run, the last filled with random duplicates, and only "
      "the order of the batches shuffled each epoch (per length bucket, if bucketing).",
      choices=("reshuffle", "fixed"))
  min_freq: int = option(1, "Drop words seen fewer times in training (they map to <unk>).", low=1)
  phrases: bool = option(
      True, "SST only: train on every labelled phrase of the training trees, as Kim does "
      "(validation and test stay whole sentences).")
  valid_fraction: float = option(
      0.1, "Fraction of training data held out for validation when the dataset has no "
      "dev split.", gt=0.0, high=0.5)
  test_fraction: float = option(
      0.1, "Fraction held out for test when the dataset has no test split and "
      "--cv_folds=0.", gt=0.0, high=0.5)
  cv_folds: int = option(
      0, "K-fold cross-validation for datasets without a test split (MR, Subj): train K "
      "models, report mean and std of test accuracy. 0 disables.", low=0)
  refit: bool = option(
      False, "After training, train a fresh model on train + validation for the epochs "
      "validation selected, in WORKDIR/refit, and report its final test metrics as "
      "refit/test/* (nothing is chosen on test). Vocabulary and length stay the training "
      "part's.")

  # Optimisation.
  batch_size: int = option(50, "Global batch size (split across devices).", low=1)
  num_epochs: int = option(25, "Passes over the training data.", low=1)
  max_steps: int = option(0, "Stop after this many steps (0: run all epochs).", low=0)
  optimizer: str = option("adadelta", "Optimizer.", choices=OPTIMIZERS)
  learning_rate: float = option(1.0, "Peak learning rate.", gt=0.0)
  momentum: float = option(0.9, "Momentum for --optimizer=momentum (and rmsprop's).",
                           low=0.0, high=0.999999)
  lr_schedule: str = option("constant", "Learning-rate schedule after warm-up.",
                            choices=SCHEDULES)
  warmup_steps: int = option(0, "Linear warm-up steps.", low=0)
  grad_clip: float = option(0.0, "Clip gradients to this global L2 norm (0: off).", low=0.0)
  sparse_updates: bool = option(
      True, "Update only the embedding rows a batch uses (exact for sgd, adagrad, rmsprop "
      "and adadelta; momentum and adam always update densely). Much faster for large "
      "vocabularies.")
  loss: str = option(
      "softmax_xent", "Training loss: softmax_xent, sigmoid_xent (binary datasets, one "
      "logit) or hinge (multiclass margin).", choices=LOSSES)

  # Regularisation (never applied to biases or embedding tables).
  l1: float = option(0.0, "L1 penalty weight on weight matrices: l1 * sum |W|.", low=0.0)
  l2: float = option(0.0, "L2 penalty weight: l2 * sum ||W||_F^2 over weight matrices.",
                     low=0.0)
  frobenius: float = option(
      0.0, "Frobenius penalty weight: frobenius * sum ||W||_F over weight matrices.", low=0.0)
  max_norm: float = option(
      0.0, "Rescale each output unit's weight vector to at most this L2 norm after every "
      "step, as Kim (2014) does with s=3 (0: off).", low=0.0)

  # Replicas trained in one compiled program (jax.vmap over the train state).
  vmap_seeds: int = option(
      0, "Train N replicas with seeds seed, seed+1, ..., seed+N-1 in one compiled program "
      "(jax.vmap over the train state) and report each and their mean/std. They share the "
      "data split of --split_seed (default --seed). 0: off.", low=0)
  vmap_learning_rates: tuple = option(
      (), "Train one replica per learning rate (comma-separated) in one compiled program; "
      "they share --seed. Replaces --learning_rate.", gt=0.0, of=float)

  steps_per_dispatch: int = option(
      1, "Training steps per call of the compiled program (a lax.scan over that many "
      "batches): fewer host round trips where a step takes about a millisecond "
      "(accelerators, small models). A dispatch never runs past a log, evaluation or "
      "checkpoint step; the steps before one go one at a time, so keep --log_every and "
      "--eval_every multiples of it. With --bucket_by_length a dispatch pads its batches "
      "to its longest.", low=1)

  # Logging and checkpoints.
  log_every: int = option(50, "Log training metrics every N steps.", low=1)
  eval_every: int = option(0, "Evaluate every N steps (0: at the end of every epoch).", low=0)
  checkpoint_every: int = option(
      0, "Save a checkpoint every N steps (0: at every evaluation).", low=0)
  keep_checkpoints: int = option(3, "Keep this many latest checkpoints (plus the best).",
                                 low=1)
  best_on_tie: str = option(
      "earlier", "Which evaluation wins when the validation metric equals the best so "
      "far (selecting best/ and the reported metrics): earlier keeps the first; later "
      "takes the newest, as Kim's (2014) code does (if val_perf >= best_val_perf).",
      choices=("earlier", "later"))
  progress: bool = option(True, "Show a progress bar on the terminal.")
  tensorboard: bool = option(True, "Write TensorBoard event files into the workdir.")

  # The model family's own hyperparameters (a dataclass of that family's module).
  model_config: Any = None

  @property
  def data_seed(self) -> int:
    """The seed of data splits and CV folds."""
    return self.split_seed if self.split_seed >= 0 else self.seed

  def replicas(self) -> list[tuple[int, float]]:
    """(seed, learning rate) of each vmapped replica; [] when not vmapping."""
    if self.vmap_learning_rates:
      return [(self.seed, lr) for lr in self.vmap_learning_rates]
    return [(self.seed + r, self.learning_rate) for r in range(self.vmap_seeds)]

  def replace(self, **kw) -> "Config":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["model_config"] = (dataclasses.asdict(self.model_config)
                         if self.model_config is not None else None)
    return d

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)
      f.write("\n")


def resolve_workdir(cfg: Config) -> str:
  return cfg.workdir or os.path.join("workdirs", f"{cfg.model}-{cfg.dataset.replace(':', '_').replace('/', '_')}")


def from_dict(d: dict) -> Config:
  """Rebuilds a Config from config.json (used by evaluation and resume checks)."""
  from nets import models  # the family registry; imported here to avoid a cycle
  d = dict(d)
  mc = d.pop("model_config", None)
  fields = {f.name for f in dataclasses.fields(Config)}
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
  cfg = Config(**kwargs)
  family = models.get(cfg.model)
  if mc is not None:
    mfields = {f.name for f in dataclasses.fields(family.Config)}
    mc = family.Config(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in mc.items() if k in mfields})
  return cfg.replace(model_config=mc)
