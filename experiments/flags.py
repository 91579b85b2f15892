"""absl flags generated from the config dataclasses, and the one Config built from them.

Each field of nets.config.Config and of every model family's Config becomes a flag with
the field's help text; a field name shared by several families (e.g. --dropout) is one
flag. Values are validated by nets.config.check, which names the flag and what it allows.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from nets import config as config_lib
from nets import models

FLAGS = flags.FLAGS
_DEFINED: dict[str, dataclasses.Field] = {}


def _default(f: dataclasses.Field):
  return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _help(f: dataclasses.Field, family_defaults: dict) -> str:
  text = f.metadata["help"]
  if f.metadata.get("choices"):
    text += f" One of: {', '.join(map(str, f.metadata['choices']))}."
  per_model = {m: d[f.name] for m, d in family_defaults.items() if f.name in d}
  if per_model:
    text += " Default by model: " + ", ".join(f"{m} {v}" for m, v in per_model.items()) + "."
  return text


def _define(f: dataclasses.Field, family_defaults: dict) -> None:
  if f.name in _DEFINED:
    return
  _DEFINED[f.name] = f
  default = _default(f)
  help_text = _help(f, family_defaults)
  if isinstance(default, bool):
    flags.DEFINE_boolean(f.name, default, help_text)
  elif isinstance(default, int):
    flags.DEFINE_integer(f.name, default, help_text)
  elif isinstance(default, float):
    flags.DEFINE_float(f.name, default, help_text)
  elif isinstance(default, tuple):
    flags.DEFINE_list(f.name, [str(x) for x in default], help_text)
  else:
    flags.DEFINE_string(f.name, default, help_text)


def define_flags() -> None:
  """Defines every run and model flag (idempotent)."""
  families = {name: models.get(name) for name in models.FAMILIES}
  family_defaults = {name: getattr(m, "DEFAULTS", {}) for name, m in families.items()}
  for f in dataclasses.fields(config_lib.Config):
    if f.name != "model_config":
      _define(f, family_defaults)
  for family in families.values():
    for f in dataclasses.fields(family.Config):
      _define(f, family_defaults)


def _value(f: dataclasses.Field):
  value = FLAGS[f.name].value
  if isinstance(_default(f), tuple):
    of = f.metadata.get("of", int)
    try:
      return tuple(of(v) for v in value)
    except ValueError:
      kind = "integers" if of is int else "numbers"
      raise config_lib.ConfigError(f"--{f.name}={','.join(value)}: must be comma-separated "
                                   f"{kind}") from None
  return value


def config_from_flags() -> config_lib.Config:
  """The run's Config: flags the user set, else the model's defaults, else the field's."""
  family = models.get(FLAGS.model)
  family_defaults = getattr(family, "DEFAULTS", {})
  values = {}
  for f in dataclasses.fields(config_lib.Config):
    if f.name == "model_config":
      continue
    if not FLAGS[f.name].present and f.name in family_defaults:
      values[f.name] = family_defaults[f.name]
    else:
      values[f.name] = _value(f)
  if FLAGS.train_file and not FLAGS["dataset"].present:
    values["dataset"] = "file"
  model_values = {}
  for f in dataclasses.fields(family.Config):
    # A flag shared by several families (e.g. --embed_dim) has one absl default; unset,
    # each family keeps its own.
    model_values[f.name] = _value(f) if FLAGS[f.name].present else _default(f)
  cfg = config_lib.Config(**values, model_config=family.Config(**model_values))
  config_lib.check(cfg)
  config_lib.check(cfg.model_config)
  if cfg.vmap_seeds and cfg.vmap_learning_rates:
    raise config_lib.ConfigError("--vmap_seeds and --vmap_learning_rates exclude each other: "
                                 "pick one axis to vectorize")
  if (cfg.vmap_seeds or cfg.vmap_learning_rates) and cfg.cv_folds:
    raise config_lib.ConfigError("--cv_folds cannot be vmapped (each fold has its own "
                                 "vocabulary, so parameter shapes differ): drop --vmap_*")
  if hasattr(family, "check"):
    family.check(cfg)
  return cfg
