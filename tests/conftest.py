"""Shared fixtures: tiny configs and tiny label-first datasets that train in seconds."""

import os
import pathlib
import random
import shutil
import tempfile

import pytest

# The tests specify exact f32 arithmetic. On GPUs, XLA's f32 matmuls and convolutions
# default to TF32 (~1e-3 relative error) and its scatter-adds use atomics (not bitwise
# repeatable), so there the tests ask for full precision and deterministic kernels.
# Flags are read when the backend starts; on the CPU both settings change nothing.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_gpu_deterministic_ops=true"]).strip()
# pytest-xdist workers share one GPU: each taking JAX's default 75% of its memory fails.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from nets import textcnn
from nets.config import Config

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
  import jax
  if jax.default_backend() != "cpu":
    jax.config.update("jax_default_matmul_precision", "highest")
  # Many tests compile the same program again (another seed, a resumed run, the
  # separate runs a vmapped one is checked against): one persistent cache per worker
  # for the session compiles each once. Numbers are unchanged: a hit loads the
  # executable that the same program compiled to.
  cache = tempfile.mkdtemp(prefix="nets-tests-jax-cache-")
  config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
  # Tiny models: compiling dominates, so skip XLA's heavier passes (as flax's lm1b test
  # does; the subprocess runs do the same through cli_env). Suite: 8:42 -> 6:48 on the
  # 2-core VM. `xla_optimizations` turns them back on for a test; the accuracy runs in
  # test_accuracy.py keep them.
  jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def xla_optimizations():
  """XLA's optimisation passes on for one test (the default suite skips them)."""
  import jax
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", True)


def assert_every_param_changed(before, after):
  """One step's spec: every parameter leaf (array) differs after it."""
  import jax
  import numpy as np
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         jax.device_get(before), jax.device_get(after))
  assert all(jax.tree.leaves(changed)), changed


def cli_env(**extra) -> dict:
  """Environment for the tests' subprocess runs of the entry points: CPU only, XLA's
  optimisation passes off (tiny models: compiling dominates and the results stay
  deterministic; the accuracy runs in test_accuracy.py keep them on), and no persistent
  compilation cache unless a test asks for one."""
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
          "NETS_COMPILATION_CACHE": "", **extra}


def shared_data_dir():
  """The real shared data (CI sets NETS_DATA_DIR=../shared/data), or None."""
  d = os.environ.get("NETS_DATA_DIR")
  return d if d and os.path.isdir(d) else None


def tiny_textcnn(**kw):
  # LeCun init, not the default kim: its zero output layer gives every class the same
  # score at init, which would make the tests that compare outputs vacuous.
  base = dict(embed_dim=8, filter_widths=(2, 3), num_filters=4, dropout=0.5,
              weight_init="lecun")
  base.update(kw)
  return textcnn.Config(**base)


def tiny_config(workdir, train_file, test_file=None, **kw) -> Config:
  model_kw = {k: kw.pop(k) for k in list(kw) if k in textcnn.Config.__dataclass_fields__}
  base = dict(model="textcnn", dataset="file", train_file=str(train_file),
              test_file=str(test_file) if test_file else "", workdir=str(workdir),
              batch_size=8, num_epochs=2, optimizer="adam", learning_rate=0.01,
              max_norm=3.0, progress=False, tensorboard=False, log_every=5,
              model_config=tiny_textcnn(**model_kw))
  base.update(kw)
  return Config(**base)


def write_keyword_dataset(path, n, seed, num_classes=2):
  """Sentences whose label is given by which keyword they contain: learnable in seconds."""
  rng = random.Random(seed)
  fillers = "the a movie film plot actor scene story was is quite very rather".split()
  keywords = ["good great", "bad awful", "meh okay"][:num_classes]
  lines = []
  for _ in range(n):
    label = rng.randrange(num_classes)
    words = [rng.choice(fillers) for _ in range(rng.randint(1, 9))]
    words.insert(rng.randint(0, len(words)), rng.choice(keywords[label].split()))
    lines.append(f"{label} {' '.join(words)}\n")
  pathlib.Path(path).write_text("".join(lines))
  return path


@pytest.fixture
def keyword_files(tmp_path):
  train = write_keyword_dataset(tmp_path / "train.txt", 96, seed=0)
  test = write_keyword_dataset(tmp_path / "test.txt", 40, seed=1)
  return train, test
