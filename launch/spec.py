"""A sweep as data: flag values as a product and a zip, expanded into named runs.

A sweep is a dict (or a list of dicts, whose runs are concatenated):

  {"base":    {"model": "textcnn", "dataset": "sst2"},          # every run gets these
   "product": {"learning_rate": [0.5, 1.0], "dropout": [0.3, 0.5]},  # every combination
   "zip":     {"seed": [0, 1], "num_filters": [100, 200]}}       # walked together

Runs = product x zip: 2 * 2 * 2 = 8 above. Each run is named from the values that vary
(product keys, then zip keys, in the order written): `learning_rate=0.5,dropout=0.3,
seed=0,num_filters=100`. That name is its workdir under the sweep dir, so it must be
stable across re-runs (resume and skip depend on it) and safe on any filesystem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
import runpy

from nets.errors import UserError

SECTIONS = ("base", "product", "zip")
# The launcher owns --workdir: it is the run's name under the sweep dir.
RESERVED_FLAGS = ("workdir",)
MAX_NAME_CHARS = 200  # below the common 255-byte limit on one path component


class SweepError(UserError):
  """The sweep file is malformed: the message names the file part at fault."""


@dataclasses.dataclass(frozen=True)
class Run:
  name: str    # the workdir's name under the sweep dir
  flags: dict  # flag -> value, base flags included, in command-line order


def load_sweep_file(path: str):
  """SWEEP from a Python sweep file, or the top-level value of a YAML one."""
  if not os.path.isfile(path):
    raise SweepError(f"sweep file not found: {path}")
  if path.endswith((".yaml", ".yml")):
    try:
      import yaml  # optional: only YAML sweep files need it
    except ImportError:
      raise SweepError(f"{path}: YAML sweep files need PyYAML (pip install pyyaml); or "
                       "write the sweep as a Python file defining SWEEP") from None
    with open(path) as f:
      return yaml.safe_load(f)
  if not path.endswith(".py"):
    raise SweepError(f"{path}: a sweep file is a .py file defining SWEEP, or .yaml/.yml")
  namespace = runpy.run_path(path)
  if "SWEEP" not in namespace:
    raise SweepError(f"{path} defines no SWEEP (a dict with base/product/zip)")
  return namespace["SWEEP"]


def expand(sweep) -> list[Run]:
  """Every run of a sweep (dict or list of dicts), in a stable order, names unique."""
  parts = sweep if isinstance(sweep, list) else [sweep]
  if not parts:
    raise SweepError("SWEEP is an empty list: give at least one dict with base/product/zip")
  runs = [run for part in parts for run in _expand_part(part)]
  _check_unique_names(runs)
  return runs


def _expand_part(part) -> list[Run]:
  _check_part(part)
  base = part.get("base") or {}
  product = part.get("product") or {}
  zipped = part.get("zip") or {}
  zip_rows = list(zip(*zipped.values())) or [()]
  runs = []
  for product_row in itertools.product(*product.values()):
    for zip_row in zip_rows:
      varying = dict(zip(product, product_row)) | dict(zip(zipped, zip_row))
      runs.append(Run(name=workdir_name(varying), flags=base | varying))
  return runs


def _check_part(part) -> None:
  if not isinstance(part, dict):
    raise SweepError(f"SWEEP must be a dict with keys {', '.join(SECTIONS)} (or a list of "
                     f"such dicts), not {type(part).__name__}")
  unknown = [k for k in part if k not in SECTIONS]
  if unknown:
    raise SweepError(f"SWEEP has unknown key(s) {', '.join(map(str, unknown))}: allowed "
                     f"are {', '.join(SECTIONS)}")
  seen = {}
  for section in SECTIONS:
    values = part.get(section) or {}
    if not isinstance(values, dict):
      raise SweepError(f"SWEEP[{section!r}] must be a dict of flag -> value(s)")
    for flag, value in values.items():
      if flag in RESERVED_FLAGS:
        raise SweepError(f"SWEEP[{section!r}] sets --{flag}: the launcher gives each run "
                         "its workdir (use --sweep_dir)")
      if flag in seen:
        raise SweepError(f"--{flag} is in both SWEEP[{seen[flag]!r}] and "
                         f"SWEEP[{section!r}]: give it in one")
      seen[flag] = section
      if section != "base" and (not isinstance(value, (list, tuple)) or not value):
        raise SweepError(f"SWEEP[{section!r}][{flag!r}] must be a non-empty list of values")
  lengths = {flag: len(values) for flag, values in (part.get("zip") or {}).items()}
  if len(set(lengths.values())) > 1:
    raise SweepError("SWEEP['zip'] lists differ in length: " +
                     ", ".join(f"{flag} has {n}" for flag, n in lengths.items()))


def _check_unique_names(runs: list[Run]) -> None:
  seen = set()
  for run in runs:
    if run.name in seen:
      raise SweepError(f"two runs share the workdir name {run.name!r}: a value repeats, or "
                       "two values map to the same name; make them differ")
    seen.add(run.name)


def flag_value(value) -> str:
  """A value as experiments.train reads it: lists comma-joined, booleans true/false."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    return ",".join(flag_value(v) for v in value)
  return str(value)


def flag_args(flags: dict) -> list[str]:
  return [f"--{flag}={flag_value(value)}" for flag, value in flags.items()]


def workdir_name(varying: dict) -> str:
  """`flag=value,flag=value` with filesystem-safe values; "run" when nothing varies."""
  if not varying:
    return "run"
  name = ",".join(f"{flag}={_safe(flag_value(value))}" for flag, value in varying.items())
  if len(name) > MAX_NAME_CHARS:
    # Stable across re-runs: the digest depends only on the full name.
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    name = name[:MAX_NAME_CHARS - 11] + "-" + digest
  return name


def _safe(value: str) -> str:
  # "," separates flags in the name, so a list value's commas become "-";
  # anything outside a portable filename alphabet becomes "_".
  return re.sub(r"[^A-Za-z0-9._+-]", "_", value.replace(",", "-"))


def unknown_flags(runs: list[Run], known: set[str]) -> list[str]:
  return sorted({flag for run in runs for flag in run.flags if flag not in known})


def train_flag_names() -> set[str]:
  """Every flag experiments.train defines: the run Config's fields and each family's."""
  from nets import config as config_lib
  from nets import models
  names = {f.name for f in dataclasses.fields(config_lib.Config)} - {"model_config"}
  for family in models.FAMILIES:
    names |= {f.name for f in dataclasses.fields(models.get(family).Config)}
  return names
