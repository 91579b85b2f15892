"""Image-classification data: MNIST from its IDX files, user IDX/.npz files, and TFDS.

The "image" data kind (see nets.data.datasets). Splits are dicts of numpy arrays

  image  uint8 [N, H, W, C]   (NHWC, as stored: scaling happens on the device)
  label  int32 [N]

Images stay uint8 in host memory (MNIST's 60000 images are 47 MB, not 188 MB as
float32); the model scales and normalizes them on the device (nets.convnet.preprocess),
with per-channel statistics of the training split that `prepare` stores in
Data.info, so evaluation normalizes new images exactly as training did.

Datasets (--dataset):
  mnist       the four IDX .gz files, located by `fetch` (local copy, cache, download).
  file        --train_file (and optional --valid_file/--test_file) in an image file
              format (`read_image_file`: .npz or an MNIST-style IDX pair).
  tfds:NAME   any TFDS dataset with an Image and a ClassLabel feature
              (tfds:cifar10, tfds:fashion_mnist, ...).

Validation is carved from the end of the training split where a dataset has none
(--valid_fraction; the convnet default 1/12 holds out MNIST's usual last 5000).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import os
import pathlib
import struct
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib

import numpy as np

from nets.data import sources
from nets.errors import ConfigError, DataError

# --------------------------------------------------------------------------
# IDX files (LeCun's format): magic = 0, 0, element type, number of dimensions;
# then one big-endian uint32 per dimension; then the elements, big-endian, row-major.

IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IDX_IMAGES_MAGIC = 2051  # uint8, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 2049  # uint8, 1 dimension (count)
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path) -> bytes:
  """A file's bytes, gunzipped if it is gzip data (judged by content, not name)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"image file not found: {path}")
  raw = path.read_bytes()
  if raw[:2] != _GZIP_MAGIC:
    return raw
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path}: corrupt or truncated gzip data ({e}); download it again or "
                    "check it against the data README") from e


def parse_idx(data: bytes, where: str = "IDX data", magic: int | None = None) -> np.ndarray:
  """The array held by the bytes of an IDX file.

  Raises DataError for a bad magic number (or not the `magic` expected), a header or
  body shorter than its dimensions say (a truncated file), or trailing bytes.
  """
  if len(data) < 4:
    raise DataError(f"{where}: {len(data)} bytes is too short for an IDX header "
                    "(truncated file?)")
  zero, type_code, ndim = struct.unpack(">HBB", data[:4])
  found = struct.unpack(">I", data[:4])[0]
  if zero != 0 or type_code not in IDX_TYPES or ndim == 0:
    raise DataError(f"{where}: not an IDX file (magic number {found:#010x}; IDX files "
                    "start with 0x0000, a type code and the number of dimensions)")
  if magic is not None and found != magic:
    raise DataError(f"{where}: IDX magic number {found} where {magic} was expected "
                    f"({_idx_kind(magic)}): images and labels files swapped?")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise DataError(f"{where}: truncated IDX header ({len(data)} of {header} bytes)")
  shape = struct.unpack(f">{ndim}I", data[4:header])
  dtype = IDX_TYPES[type_code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  body = len(data) - header
  if body < expected:
    raise DataError(f"{where}: truncated IDX file: shape {shape} needs {expected} bytes of "
                    f"data, found {body}")
  if body > expected:
    raise DataError(f"{where}: {body - expected} bytes after the IDX data of shape {shape} "
                    "(not an IDX file, or a wrong header)")
  array = np.frombuffer(data, dtype, offset=header).reshape(shape)
  return array.astype(dtype.newbyteorder("="), copy=False)


def _idx_kind(magic: int) -> str:
  return {IDX_IMAGES_MAGIC: "an images file", IDX_LABELS_MAGIC: "a labels file"}.get(
      magic, "an IDX file")


def read_idx(path, magic: int | None = None) -> np.ndarray:
  """The array in an IDX file (optionally gzip-compressed)."""
  return parse_idx(_read_bytes(path), str(path), magic)


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> None:
  """Writes `array` as an IDX file (gzip-compressed if `compress`, default: name ends .gz)."""
  array = np.asarray(array)
  codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
  dtype = array.dtype.newbyteorder("=")
  if dtype not in codes:
    raise ValueError(f"IDX has no type for {array.dtype}")
  code = codes[dtype]
  data = (struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
          + array.astype(IDX_TYPES[code], copy=False).tobytes())
  if compress if compress is not None else str(path).endswith(".gz"):
    data = gzip.compress(data, mtime=0)
  pathlib.Path(path).write_bytes(data)


def read_idx_pair(images_path, labels_path) -> dict:
  """{"image": uint8 [N, H, W, 1], "label": int32 [N]} from an IDX images/labels pair."""
  images = read_idx(images_path, IDX_IMAGES_MAGIC)
  labels = read_idx(labels_path, IDX_LABELS_MAGIC)
  if len(images) != len(labels):
    raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                    f"{len(labels)} labels")
  return {"image": images[..., None], "label": labels.astype(np.int32)}


def labels_path_for(images_path: str) -> str:
  """MNIST naming: X-images-idx3-ubyte[.gz] goes with X-labels-idx1-ubyte[.gz]."""
  name = os.path.basename(images_path)
  if "images-idx3" not in name:
    raise DataError(f"{images_path}: an IDX images file must be named like "
                    "'NAME-images-idx3-ubyte[.gz]' (its labels in 'NAME-labels-idx1-ubyte"
                    "[.gz]' next to it), or use a .npz with 'image' and 'label' arrays")
  return os.path.join(os.path.dirname(images_path),
                      name.replace("images-idx3", "labels-idx1"))


def read_image_file(path: str) -> dict:
  """Images and labels from a user file (--train_file/--test_file, evaluate's --test_file).

  Formats: a .npz with arrays `image` (uint8 [N, H, W] or [N, H, W, C]) and `label`
  (integers [N]); or an IDX images file 'NAME-images-idx3-ubyte[.gz]' whose labels are
  in 'NAME-labels-idx1-ubyte[.gz]' beside it (MNIST's layout).
  """
  if not pathlib.Path(path).is_file():
    raise DataError(f"image file not found: {path}")
  if str(path).endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as npz:
        if "image" not in npz or "label" not in npz:
          raise DataError(f"{path}: a .npz image file needs arrays 'image' and 'label'; "
                          f"it has {', '.join(npz.files)}")
        image, label = npz["image"], npz["label"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
      raise DataError(f"{path}: not a readable .npz file ({e})") from e
    if image.ndim == 3:
      image = image[..., None]
    if image.ndim != 4 or image.dtype != np.uint8:
      raise DataError(f"{path}: 'image' must be uint8 [N, H, W] or [N, H, W, C], got "
                      f"{image.dtype} {list(image.shape)}")
    if label.ndim != 1 or len(label) != len(image) or not np.issubdtype(label.dtype,
                                                                        np.integer):
      raise DataError(f"{path}: 'label' must be {len(image)} integers, got {label.dtype} "
                      f"{list(label.shape)}")
    return {"image": image, "label": label.astype(np.int32)}
  return read_idx_pair(path, labels_path_for(path))


# --------------------------------------------------------------------------
# MNIST files: located like every data file (local copy, cache, download), but a download
# is verified by the sha256 of its *decompressed* bytes. The shared data folder's
# train-images .gz was re-compressed (same IDX content, other gzip bytes), so the
# original .gz and a mirror of that folder both verify this way.

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # as TFDS uses
# name -> (sha256 of the original .gz, as TFDS's url_checksums; sha256 of the IDX content)
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
MNIST_CONTENT_SHA256 = {f"mnist/{name}": content for name, (_, content) in MNIST_FILES.items()}
for _name, (_gz_sha256, _) in MNIST_FILES.items():
  sources.register(sources.RemoteFile(path=f"mnist/{_name}", url=MNIST_URL + _name,
                                      sha256=_gz_sha256))


def fetch(path: str, data_dir: str | None = None, mirror: str | None = None,
          cache_dir: str | None = None) -> pathlib.Path:
  """A local file for the data-layout `path` (see sources.resolve for where it looks).

  Differs from sources.resolve only in what a download is checked against: the sha256
  of the decompressed content for the files of `MNIST_CONTENT_SHA256`.
  """
  content_sha256 = MNIST_CONTENT_SHA256.get(path)
  if content_sha256 is None:
    return sources.resolve(path, data_dir=data_dir, mirror=mirror, cache_dir=cache_dir)
  local_dir = sources._env_dir(data_dir, sources.DATA_DIR_ENV)  # pylint: disable=protected-access
  if local_dir and (local := pathlib.Path(local_dir).expanduser() / path).is_file():
    return local  # local copies are trusted, as in sources.resolve
  cache_root = sources._env_dir(cache_dir, sources.CACHE_DIR_ENV) or sources.DEFAULT_CACHE_DIR  # pylint: disable=protected-access
  cached = pathlib.Path(cache_root).expanduser() / path
  if cached.is_file():
    return cached
  base = sources._env_dir(mirror, sources.MIRROR_ENV)  # pylint: disable=protected-access
  url = f"{base.rstrip('/')}/{urllib.parse.quote(path)}" if base else sources.FILES[path].url
  try:
    with urllib.request.urlopen(url, timeout=sources.TIMEOUT_S) as response:
      raw = response.read()
  except (OSError, ValueError, http.client.HTTPException) as e:
    raise DataError(sources._network_message(path, url, e)) from e  # pylint: disable=protected-access
  try:
    actual = hashlib.sha256(gzip.decompress(raw)).hexdigest()
  except (OSError, EOFError, zlib.error):
    actual = "(not gzip data)"
  if actual != content_sha256:
    raise DataError(f"checksum mismatch for {path} downloaded from {url}: expected the "
                    f"decompressed content to have sha256 {content_sha256}, got {actual}; "
                    f"pass --data_dir=DIR (a verified copy laid out like DIR/{path}) or set "
                    f"{sources.DATA_DIR_ENV}")
  try:
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.", suffix=".part")
    with os.fdopen(fd, "wb") as out:
      out.write(raw)
    os.replace(tmp, cached)  # atomic: concurrent runs never see a partial file
  except OSError as e:
    raise DataError(f"cannot write to the download cache folder {cached.parent} "
                    f"({e.strerror or e}); set {sources.CACHE_DIR_ENV} to a writable "
                    "folder or pass --data_dir=DIR") from e
  return cached


# --------------------------------------------------------------------------
# Loading datasets by name


@dataclasses.dataclass
class ImageSplits:
  """Train/valid/test arrays of one image-classification dataset (None: no such split)."""

  train: dict
  valid: dict | None
  test: dict | None
  num_classes: int
  class_names: list[str] | None = None
  name: str = ""


MNIST_CLASSES = [str(d) for d in range(10)]


def load_mnist(data_dir=None, mirror=None, cache_dir=None) -> ImageSplits:
  """MNIST's official 60000 training and 10000 test images."""
  get = lambda name: fetch(f"mnist/{name}", data_dir, mirror, cache_dir)
  train = read_idx_pair(get("train-images-idx3-ubyte.gz"), get("train-labels-idx1-ubyte.gz"))
  test = read_idx_pair(get("t10k-images-idx3-ubyte.gz"), get("t10k-labels-idx1-ubyte.gz"))
  return ImageSplits(train=train, valid=None, test=test, num_classes=10,
                     class_names=MNIST_CLASSES, name="mnist")


def load_files(train_file: str, valid_file: str = "", test_file: str = "") -> ImageSplits:
  if not train_file:
    raise ConfigError("--dataset=file needs --train_file=PATH (a .npz with 'image' and "
                      "'label', or an IDX 'NAME-images-idx3-ubyte[.gz]' file)")
  splits = {s: read_image_file(p) if p else None
            for s, p in (("train", train_file), ("valid", valid_file), ("test", test_file))}
  labels = np.concatenate([a["label"] for a in splits.values() if a is not None])
  if labels.min() < 0:
    raise DataError(f"negative label {labels.min()} in --dataset=file data; labels must be "
                    "integers 0..K-1")
  return ImageSplits(**splits, num_classes=int(labels.max()) + 1, name="file")


def load_tfds(dataset: str, data_dir: str | None = None) -> ImageSplits:
  """A TFDS dataset with an Image and a ClassLabel feature, read in batches."""
  tfds, builder = sources.tfds_builder(dataset, data_dir)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top (already loaded above)
  features = builder.info.features
  images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
  labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
  images.sort(key=lambda k: k != "image")
  labels.sort(key=lambda k: k != "label")
  if not images or not labels:
    raise DataError(f"tfds dataset {dataset!r} needs an Image and a ClassLabel feature for "
                    f"image classification; it has {', '.join(features.keys())}")
  image_key, label_key = images[0], labels[0]

  def read(split: str) -> dict | None:
    ds = sources.tfds_split(builder, split)
    if ds is None:
      return None
    # Batches, not batch_size=-1: that needs the split size, unknown under mock_data.
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key])).batch(1024)
    try:
      parts = list(tfds.as_numpy(ds))
    except tf.errors.InvalidArgumentError as e:
      raise DataError(f"tfds dataset {dataset!r}: its images differ in size; this loader "
                      "needs one image shape") from e
    if not parts:
      return None
    image = np.concatenate([p[0] for p in parts]).astype(np.uint8)
    label = np.concatenate([p[1] for p in parts]).astype(np.int32)
    keep = label >= 0  # e.g. hidden test labels
    return {"image": image[keep], "label": label[keep]} if keep.any() else None

  train = read("train")
  if train is None:
    raise DataError(f"tfds dataset {dataset!r} has no labelled 'train' split")
  label_feature = features[label_key]
  return ImageSplits(train=train, valid=read("validation"), test=read("test"),
                     num_classes=int(label_feature.num_classes),
                     class_names=list(label_feature.names), name=f"tfds:{dataset}")


def load_image_classification(name: str, *, data_dir=None, mirror=None, train_file="",
                              valid_file="", test_file="") -> ImageSplits:
  if name != "file" and (train_file or valid_file or test_file):
    raise ConfigError("--train_file/--valid_file/--test_file are only used with --dataset=file")
  if name == "mnist":
    return load_mnist(data_dir, mirror)
  if name == "file":
    return load_files(train_file, valid_file, test_file)
  if name.startswith("tfds:") and len(name) > len("tfds:"):
    return load_tfds(name[len("tfds:"):], data_dir)
  raise DataError(f"unknown image dataset {name!r}; use mnist, file (with --train_file) or "
                  "tfds:NAME (e.g. tfds:cifar10, tfds:fashion_mnist)")


# --------------------------------------------------------------------------
# Splits and statistics


def take(arrays: dict, index) -> dict:
  return {k: v[index] for k, v in arrays.items()}


def hold_out_last(arrays: dict, fraction: float) -> tuple[dict, dict]:
  """(rest, held_out): the last round(fraction * n) examples held out (at least 1).

  The last ones, not a random draw: MNIST's customary validation set is its last 5000
  training images, and the split then does not depend on --seed.
  """
  n = len(arrays["label"])
  if n < 2:
    raise DataError(f"cannot hold out part of {n} training image(s); need at least 2")
  held = min(max(1, round(fraction * n)), n - 1)
  return take(arrays, slice(0, n - held)), take(arrays, slice(n - held, n))


def pixel_stats(images_NxHxWxC: np.ndarray, chunk: int = 4096) -> dict:
  """Mean and std of raw pixel values (0..255), per channel and over all channels."""
  C = images_NxHxWxC.shape[-1]
  total, total_sq, count = np.zeros(C), np.zeros(C), 0
  for start in range(0, len(images_NxHxWxC), chunk):  # float64 copies of a chunk only
    x = images_NxHxWxC[start:start + chunk].reshape(-1, C).astype(np.float64)
    total += x.sum(0)
    total_sq += (x * x).sum(0)
    count += len(x)
  count = max(count, 1)
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
  global_mean = total.sum() / (count * C)
  global_std = np.sqrt(max(total_sq.sum() / (count * C) - global_mean ** 2, 0.0))
  return {"pixel_mean": mean.tolist(), "pixel_std": std.tolist(),
          "pixel_mean_global": float(global_mean), "pixel_std_global": float(global_std)}


# --- the "image" data kind (see nets.data.datasets) ---------------------------------------


def load_raw(cfg) -> ImageSplits:
  return load_image_classification(
      cfg.dataset, data_dir=cfg.data_dir or None, mirror=cfg.data_mirror or None,
      train_file=cfg.train_file, valid_file=cfg.valid_file, test_file=cfg.test_file)


def prepare(raw: ImageSplits, cfg, fold: int = 0):
  """Carves test (or a CV fold) and validation from training data; training statistics."""
  from nets import losses
  from nets.data.datasets import Data
  from nets.data.text import cv_fold_ids
  train, valid, test = raw.train, raw.valid, raw.test
  if cfg.cv_folds:
    if test is not None:
      raise DataError(f"--cv_folds is for datasets without a test split; {raw.name} has "
                      "one, so use --cv_folds=0")
    seed = getattr(cfg, "data_seed", cfg.seed)  # --split_seed where the Config has it
    fold_ids = cv_fold_ids(len(train["label"]), cfg.cv_folds, seed)
    train, test = take(train, fold_ids != fold), take(train, fold_ids == fold)
  elif test is None:
    train, test = hold_out_last(train, cfg.test_fraction)
  if valid is None:
    train, valid = hold_out_last(train, cfg.valid_fraction)
  shapes = {s: a["image"].shape[1:] for s, a in (("train", train), ("valid", valid),
                                                 ("test", test))}
  if len(set(shapes.values())) != 1:
    raise DataError(f"{raw.name}: splits hold images of different shapes {shapes}")
  for split, arrays in (("train", train), ("valid", valid), ("test", test)):
    bad = arrays["label"][(arrays["label"] < 0) | (arrays["label"] >= raw.num_classes)]
    if bad.size:
      raise DataError(f"{raw.name} {split}: label {bad[0]} is outside 0..{raw.num_classes - 1}")
  if cfg.loss == "sigmoid_xent" and raw.num_classes != 2:
    raise ConfigError(f"--loss=sigmoid_xent needs a binary dataset ({cfg.dataset} has "
                      f"{raw.num_classes} classes): use softmax_xent or hinge")
  info = {"image_shape": [int(d) for d in shapes["train"]], **pixel_stats(train["image"])}
  return Data(train=train, valid=valid, test=test, num_classes=raw.num_classes,
              num_outputs=losses.num_outputs(cfg.loss, raw.num_classes), name=cfg.dataset,
              class_names=raw.class_names, info=info)


def encode_file(path: str, data, cfg=None) -> dict:
  """Images and labels of `path` (see read_image_file) for a trained run (evaluate)."""
  arrays = read_image_file(path)
  expected = tuple(data.info["image_shape"])
  if arrays["image"].shape[1:] != expected:
    raise DataError(f"{path}: images of shape {list(arrays['image'].shape[1:])}, but the "
                    f"model was trained on {list(expected)}")
  bad = arrays["label"][(arrays["label"] < 0) | (arrays["label"] >= data.num_classes)]
  if bad.size:
    raise DataError(f"{path}: label {bad[0]} is outside 0..{data.num_classes - 1}")
  return arrays
