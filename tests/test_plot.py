"""experiments.plot: training curves for any workdir, first-layer filters for ConvNets."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import plot
from nets.errors import UserError
from nets.trainer import train_and_evaluate
from tests.conftest import REPO, cli_env
from tests.test_convnet import tiny_run_config, write_synthetic_mnist

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
  import matplotlib.image
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC, path
  pixels = matplotlib.image.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
  assert pixels.std() > 0  # something was drawn


def write_metrics(run_dir, model="textcnn", steps=6):
  os.makedirs(run_dir, exist_ok=True)
  records = []
  for step in range(1, steps + 1):
    records.append({"step": step, "epoch": step / 3, "train/loss": 1.0 / step,
                    "train/accuracy": 1 - 0.5 / step})
    if step % 3 == 0:
      records.append({"step": step, "epoch": step / 3, "valid/loss": 1.2 / step,
                      "valid/accuracy": 0.9 - 0.4 / step, "test/accuracy": 0.8,
                      "test/loss": 0.5})
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    json.dump({"model": model}, f)


def test_curves_of_any_family_and_of_cv_folds(tmp_path):
  write_metrics(tmp_path / "run")
  written = plot.plot_workdir(str(tmp_path / "run"))
  assert written == [str(tmp_path / "run" / "curves.png")]  # no filters for a textcnn
  assert_png(written[0])
  for fold in ("fold00", "fold01"):
    write_metrics(tmp_path / "cv" / fold)
  written = plot.plot_workdir(str(tmp_path / "cv"), output_dir=str(tmp_path / "pngs"))
  assert sorted(written) == [str(tmp_path / "pngs" / f / "curves.png")
                             for f in ("fold00", "fold01")]
  for path in written:
    assert_png(path)


def test_curves_read_every_split():
  records = [{"step": 1, "train/loss": 2.0}, {"step": 2, "valid/accuracy": 0.5,
                                              "test/accuracy": 0.4}]
  lines = plot.curves(records)
  assert lines == {("train", "loss"): ([1], [2.0]), ("valid", "accuracy"): ([2], [0.5]),
                   ("test", "accuracy"): ([2], [0.4])}


def test_convnet_workdir_gets_curves_and_filters(tmp_path):
  data_dir = write_synthetic_mnist(tmp_path / "data")
  wd = tmp_path / "wd"
  train_and_evaluate(tiny_run_config(wd, data_dir, num_epochs=1))
  written = plot.plot_workdir(str(wd))
  assert [os.path.basename(p) for p in written] == ["curves.png", "filters.png"]
  for path in written:
    assert_png(path)


def test_filter_grid_layout():
  kernel = np.random.default_rng(0).normal(size=(5, 5, 1, 16))
  grid = plot.filter_grid(kernel)
  assert grid.shape == (4 * 6 - 1, 4 * 6 - 1)  # 4x4 filters, 1-pixel gaps
  assert grid.min() == 0.0 and grid.max() == 1.0
  np.testing.assert_allclose(grid[:5, :5].max(), 1.0)  # each filter scaled on its own
  rgb = plot.filter_grid(np.random.default_rng(0).normal(size=(3, 3, 3, 5)))
  assert rgb.shape == (2 * 4 - 1, 3 * 4 - 1, 3)


def test_bad_workdirs(tmp_path):
  with pytest.raises(UserError, match="no such directory"):
    plot.plot_workdir(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="holds no metrics.jsonl"):
    plot.plot_workdir(str(tmp_path / "empty"))
  result = subprocess.run([sys.executable, "-m", "experiments.plot",
                           f"--workdir={tmp_path / 'missing'}"], cwd=REPO,
                          env=cli_env(), capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert [l for l in result.stderr.splitlines() if l.startswith("error:")] == [
      f"error: --workdir={tmp_path / 'missing'}: no such directory"]
