"""The "image" data kind: IDX parsing and its errors, MNIST, downloads, splits, tfds."""

import functools
import gzip
import hashlib
import http.server
import threading
import types
import urllib.parse
import urllib.request

import numpy as np
import pytest

from nets import convnet
from nets.config import Config
from nets.data import images, sources
from nets.errors import ConfigError, DataError
from tests.conftest import shared_data_dir


def image_config(**kw):
  base = dict(model="convnet", dataset="mnist", valid_fraction=1 / 12,
              model_config=convnet.Config())
  base.update(kw)
  return Config(**base)


# --- IDX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("name", ["x-idx", "x-idx.gz"])
def test_idx_round_trip(tmp_path, dtype, name):
  array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
  images.write_idx(tmp_path / name, array)
  raw = (tmp_path / name).read_bytes()
  assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
  back = images.read_idx(tmp_path / name)
  assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
  np.testing.assert_array_equal(back, array)


def test_idx_header_is_mnists():
  header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
  array = images.parse_idx(header + bytes(2 * 784), magic=images.IDX_IMAGES_MAGIC)
  assert array.shape == (2, 28, 28) and array.dtype == np.uint8
  assert int.from_bytes(header[:4], "big") == images.IDX_IMAGES_MAGIC == 2051


def test_truncated_idx_files_are_data_errors(tmp_path):
  images.write_idx(tmp_path / "a.idx", np.zeros((4, 5, 5), np.uint8))
  raw = (tmp_path / "a.idx").read_bytes()
  with pytest.raises(DataError, match="truncated IDX file: shape \\(4, 5, 5\\) needs 100"):
    images.parse_idx(raw[:-7])
  with pytest.raises(DataError, match="truncated IDX header"):
    images.parse_idx(raw[:9])
  with pytest.raises(DataError, match="too short"):
    images.parse_idx(raw[:3])
  with pytest.raises(DataError, match="bytes after the IDX data"):
    images.parse_idx(raw + b"\0")
  gz = gzip.compress(raw)
  (tmp_path / "cut.gz").write_bytes(gz[:len(gz) // 2])
  with pytest.raises(DataError, match="corrupt or truncated gzip"):
    images.read_idx(tmp_path / "cut.gz")


def test_wrong_magic_is_a_data_error(tmp_path):
  images.write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(3, np.uint8))
  with pytest.raises(DataError, match="magic number 2049 where 2051 was expected"):
    images.read_idx(tmp_path / "labels-idx1-ubyte", images.IDX_IMAGES_MAGIC)
  (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
  with pytest.raises(DataError, match="not an IDX file"):
    images.read_idx(tmp_path / "png")
  with pytest.raises(DataError, match="not found"):
    images.read_idx(tmp_path / "missing")


def test_idx_pairs_and_user_files(tmp_path):
  x = np.random.default_rng(0).integers(0, 256, (5, 6, 7), dtype=np.uint8)
  y = np.array([0, 1, 2, 1, 0], np.uint8)
  images.write_idx(tmp_path / "my-images-idx3-ubyte.gz", x)
  images.write_idx(tmp_path / "my-labels-idx1-ubyte.gz", y)
  pair = images.read_image_file(str(tmp_path / "my-images-idx3-ubyte.gz"))
  assert pair["image"].shape == (5, 6, 7, 1) and pair["label"].dtype == np.int32
  np.testing.assert_array_equal(pair["image"][..., 0], x)
  np.savez(tmp_path / "f.npz", image=x, label=y)
  npz = images.read_image_file(str(tmp_path / "f.npz"))
  np.testing.assert_array_equal(npz["image"], pair["image"])
  np.savez(tmp_path / "bad.npz", pixels=x)
  with pytest.raises(DataError, match="needs arrays 'image' and 'label'"):
    images.read_image_file(str(tmp_path / "bad.npz"))
  np.savez(tmp_path / "float.npz", image=x.astype(np.float32), label=y)
  with pytest.raises(DataError, match="must be uint8"):
    images.read_image_file(str(tmp_path / "float.npz"))
  with pytest.raises(DataError, match="named like"):
    images.read_image_file(str(tmp_path / "my-labels-idx1-ubyte.gz"))
  images.write_idx(tmp_path / "short-images-idx3-ubyte", x)
  images.write_idx(tmp_path / "short-labels-idx1-ubyte", y[:3])
  with pytest.raises(DataError, match="5 images but .* 3 labels"):
    images.read_image_file(str(tmp_path / "short-images-idx3-ubyte"))


# --- MNIST from the shared data -------------------------------------------------------------------

SHARED_DATA = shared_data_dir()  # read now: the download tests unset NETS_DATA_DIR
needs_data = pytest.mark.skipif(SHARED_DATA is None,
                                reason="set NETS_DATA_DIR to the shared data folder")


@needs_data
def test_mnist_splits_match_the_readme():
  cfg = image_config()
  raw = images.load_raw(cfg)
  assert raw.train["image"].shape == (60000, 28, 28, 1) and raw.test["image"].shape == (
      10000, 28, 28, 1)
  assert raw.train["image"].dtype == np.uint8
  assert np.bincount(raw.train["label"]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421,
                                                      5918, 6265, 5851, 5949]
  assert np.bincount(raw.test["label"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958,
                                                     1028, 974, 1009]
  data = images.prepare(raw, cfg)
  assert len(data.train["label"]) == 55000 and len(data.valid["label"]) == 5000
  np.testing.assert_array_equal(data.valid["image"], raw.train["image"][55000:])  # last 5000
  assert data.info["image_shape"] == [28, 28, 1]
  assert 30 < data.info["pixel_mean"][0] < 36 and 75 < data.info["pixel_std"][0] < 82


# --- downloads are verified by the decompressed content ------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):
    pass


@pytest.fixture
def serve(monkeypatch, tmp_path):
  """serve(root) -> base URL of an HTTP server on 127.0.0.1; nothing else is reachable."""
  for env in (sources.DATA_DIR_ENV, sources.MIRROR_ENV):
    monkeypatch.delenv(env, raising=False)
  monkeypatch.setenv(sources.CACHE_DIR_ENV, str(tmp_path / "cache"))
  real_urlopen = urllib.request.urlopen

  def local_only(url, *args, **kwargs):
    assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", f"tried to reach {url}"
    return real_urlopen(url, *args, **kwargs)

  monkeypatch.setattr(urllib.request, "urlopen", local_only)
  servers = []

  def start(root):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    servers.append(server)
    return f"http://127.0.0.1:{server.server_address[1]}"

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


LABELS = "mnist/t10k-labels-idx1-ubyte.gz"


def test_original_and_recompressed_gzip_both_verify(serve, tmp_path, monkeypatch):
  content = bytes([0, 0, 8, 1, 0, 0, 0, 4, 7, 2, 1, 0])  # an IDX labels file
  monkeypatch.setitem(images.MNIST_CONTENT_SHA256, LABELS,
                      hashlib.sha256(content).hexdigest())
  for level, name in ((1, "fast"), (9, "best")):  # same content, different .gz bytes
    root = tmp_path / name
    (root / "mnist").mkdir(parents=True)
    (root / LABELS).write_bytes(gzip.compress(content, compresslevel=level, mtime=level))
    got = images.fetch(LABELS, mirror=serve(root), cache_dir=str(tmp_path / f"c{name}"))
    np.testing.assert_array_equal(images.read_idx(got), [7, 2, 1, 0])
    assert got.read_bytes() == (root / LABELS).read_bytes()  # cached as served
  bad = tmp_path / "bad"
  (bad / "mnist").mkdir(parents=True)
  (bad / LABELS).write_bytes(gzip.compress(content[:-1] + b"\x09"))
  with pytest.raises(DataError, match="checksum mismatch .* decompressed content"):
    images.fetch(LABELS, mirror=serve(bad), cache_dir=str(tmp_path / "cbad"))
  assert not (tmp_path / "cbad" / LABELS).exists()  # nothing unverified enters the cache


@needs_data
def test_a_mirror_of_the_shared_data_verifies(serve, tmp_path):
  got = images.fetch(LABELS, mirror=serve(SHARED_DATA), cache_dir=str(tmp_path / "c"))
  assert len(images.read_idx(got)) == 10000


def test_mnist_files_are_registered_with_their_public_sources():
  for name in images.MNIST_FILES:
    remote = sources.FILES[f"mnist/{name}"]
    assert remote.url.startswith("https://") and remote.url.endswith(name)
    assert len(remote.sha256) == 64


def test_unreachable_download_is_a_one_line_data_error(serve, tmp_path):
  with pytest.raises(DataError, match="could not download mnist/"):
    images.fetch(LABELS, mirror="http://127.0.0.1:9", cache_dir=str(tmp_path / "c"))


# --- splits and configuration errors ------------------------------------------------------------------

def tiny_splits(n=24, test=True):
  rng = np.random.default_rng(0)
  make = lambda n: {"image": rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8),
                    "label": rng.integers(0, 3, n).astype(np.int32)}
  return images.ImageSplits(train=make(n), valid=None, test=make(6) if test else None,
                            num_classes=3, name="tiny")


def test_validation_is_the_end_of_training_data_and_stats_are_per_channel():
  raw = tiny_splits()
  data = images.prepare(raw, image_config(valid_fraction=0.25))
  assert len(data.train["label"]) == 18
  np.testing.assert_array_equal(data.valid["image"], raw.train["image"][18:])
  x = data.train["image"].reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(data.info["pixel_mean"], x.mean(0))
  np.testing.assert_allclose(data.info["pixel_std"], x.std(0))
  np.testing.assert_allclose(data.info["pixel_std_global"], x.std())


def test_datasets_without_test_split_and_cross_validation():
  data = images.prepare(tiny_splits(test=False), image_config(test_fraction=0.25))
  assert len(data.test["label"]) == 6
  cv = image_config(cv_folds=3)
  folds = [images.prepare(tiny_splits(test=False), cv, fold) for fold in range(3)]
  assert sum(len(f.test["label"]) for f in folds) == 24
  with pytest.raises(DataError, match="--cv_folds is for datasets without a test split"):
    images.prepare(tiny_splits(), cv)


def test_configuration_errors():
  with pytest.raises(DataError, match="unknown image dataset 'sst2'"):
    images.load_image_classification("sst2")
  with pytest.raises(ConfigError, match="only used with --dataset=file"):
    images.load_image_classification("mnist", train_file="x.npz")
  with pytest.raises(ConfigError, match="needs --train_file"):
    images.load_image_classification("file")
  with pytest.raises(ConfigError, match="binary"):
    images.prepare(tiny_splits(), image_config(loss="sigmoid_xent"))


def test_encode_file_checks_the_trained_shape(tmp_path):
  np.savez(tmp_path / "t.npz", image=np.zeros((2, 5, 5), np.uint8), label=np.array([0, 1]))
  data = types.SimpleNamespace(info={"image_shape": [4, 4, 1]}, num_classes=2)
  with pytest.raises(DataError, match="the model was trained on \\[4, 4, 1\\]"):
    images.encode_file(str(tmp_path / "t.npz"), data)
  data.info["image_shape"] = [5, 5, 1]
  assert images.encode_file(str(tmp_path / "t.npz"), data)["image"].shape == (2, 5, 5, 1)


# --- tfds --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,shape", [("cifar10", (32, 32, 3)), ("fashion_mnist", (28, 28, 1))])
def test_tfds_under_mock_data(name, shape):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=10):
    raw = images.load_image_classification(f"tfds:{name}")
  assert raw.train["image"].shape == (10, *shape) and raw.train["image"].dtype == np.uint8
  assert raw.test["label"].dtype == np.int32 and raw.num_classes == 10
  assert raw.name == f"tfds:{name}" and len(raw.class_names) == 10


def test_tfds_dataset_without_images():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(DataError, match="needs an Image and a ClassLabel feature"):
      images.load_image_classification("tfds:imdb_reviews")
