"""Tests for nets.data.sources against a local HTTP server (never the internet)."""

import functools
import hashlib
import http.server
import os
import pathlib
import shutil
import socket
import threading
import urllib.parse
import urllib.request

import pytest

from nets.data import sources
from nets.errors import DataError

REAL_DATA_DIR = os.environ.get(sources.DATA_DIR_ENV)
needs_data = pytest.mark.skipif(not REAL_DATA_DIR,
                                reason="set NETS_DATA_DIR to the shared data folder")

# Small files, one per encoding family.
SERVED = ["text_classification/trec/TREC.test.all", "text_classification/sst2/stsa.binary.dev"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
  """Isolates each test: no env settings, a private cache, only 127.0.0.1 reachable."""
  for env in (sources.DATA_DIR_ENV, sources.MIRROR_ENV, sources.CACHE_DIR_ENV):
    monkeypatch.delenv(env, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default cache must stay unused
  real_urlopen = urllib.request.urlopen

  def local_only(url, *args, **kwargs):
    host = urllib.parse.urlsplit(url if isinstance(url, str) else url.full_url).hostname
    assert host == "127.0.0.1", f"test tried to reach {url}"
    return real_urlopen(url, *args, **kwargs)

  monkeypatch.setattr(urllib.request, "urlopen", local_only)


@pytest.fixture
def served(tmp_path):
  """A copy of SERVED files laid out like the data folder."""
  if not REAL_DATA_DIR:
    pytest.skip("set NETS_DATA_DIR to the shared data folder")
  root = tmp_path / "served"
  for path in SERVED:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pathlib.Path(REAL_DATA_DIR, path), root / path)
  return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):
    pass


@pytest.fixture
def mirror(served):
  """An HTTP server on 127.0.0.1 serving `served`; yields its base URL."""
  handler = functools.partial(_QuietHandler, directory=str(served))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                            daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}"
  finally:
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port_url():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  return f"http://127.0.0.1:{port}"  # nothing listens there any more


def _sha256(path) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _all_files() -> dict:
  """The table with every data kind registered (each kind registers its files on import)."""
  import importlib
  from nets.data import datasets
  for module in datasets.DATA_KINDS.values():
    importlib.import_module(module)
  return sources.FILES


TEXT = "text_classification/"


def test_files_table():
  files = _all_files()
  text = {p: r for p, r in files.items() if p.startswith(TEXT)}
  assert {p.split("/")[1] for p in text} == {"mr", "sst1", "sst2", "sst_trees", "subj", "trec"}
  assert len(text) == 19
  for path, remote in files.items():
    assert remote.path == path and len(remote.sha256) == 64
    assert remote.url.startswith("https://")
  for remote in text.values():
    assert remote.url.startswith("https://raw.githubusercontent.com/")
  train_trees = sources.FILES["text_classification/sst_trees/train.txt"].url
  assert train_trees.endswith("/trees/train%E5%89%AF%E6%9C%AC.txt")
  assert "/d61ded09c99c0199d8c5bca946cd65864de2b296/data/raw/rt-polarity.pos" in (
      sources.FILES["text_classification/mr/rt-polarity.pos"].url)


@needs_data
def test_files_table_matches_shared_data():
  root = pathlib.Path(REAL_DATA_DIR)
  files = _all_files()
  on_disk = {p.relative_to(root).as_posix() for p in (root / "text_classification").rglob("*")
             if p.is_file()}
  assert on_disk == {p for p in files if p.startswith(TEXT)}
  for path, remote in files.items():
    assert (root / path).is_file(), path  # every registered file is in the shared layout
    if path.startswith(TEXT):
      assert _sha256(root / path) == remote.sha256, path


def test_download_from_mirror_lands_in_cache(mirror, served, tmp_path):
  cache = tmp_path / "cache"
  path = SERVED[0]
  got = sources.resolve(path, mirror=mirror, cache_dir=str(cache))
  assert got == cache / path
  assert got.read_bytes() == (served / path).read_bytes()
  assert [p.name for p in got.parent.iterdir()] == [got.name]  # no temp files left


def test_download_with_env_settings(mirror, tmp_path, monkeypatch):
  monkeypatch.setenv(sources.MIRROR_ENV, mirror + "/")
  monkeypatch.setenv(sources.CACHE_DIR_ENV, str(tmp_path / "envcache"))
  got = sources.resolve(SERVED[1])
  assert got == tmp_path / "envcache" / SERVED[1]
  assert _sha256(got) == sources.FILES[SERVED[1]].sha256


def test_corrupted_download_raises_and_leaves_nothing(mirror, served, tmp_path):
  path = SERVED[0]
  with open(served / path, "ab") as f:
    f.write(b"0 an extra line\n")
  cache = tmp_path / "cache"
  with pytest.raises(DataError, match="checksum mismatch") as info:
    sources.resolve(path, mirror=mirror, cache_dir=str(cache))
  message = str(info.value)
  assert sources.FILES[path].sha256 in message and _sha256(served / path) in message
  assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_server_down_gives_one_line_data_error(closed_port_url, tmp_path):
  with pytest.raises(DataError) as info:
    sources.resolve(SERVED[0], mirror=closed_port_url, cache_dir=str(tmp_path / "cache"))
  message = str(info.value)
  assert "\n" not in message
  for part in (SERVED[0], closed_port_url, "--data_dir", "NETS_DATA_DIR"):
    assert part in message
  assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_missing_file_on_mirror_is_data_error(mirror, tmp_path):
  path = "text_classification/mr/rt-polarity.all"  # not served
  with pytest.raises(DataError, match="HTTP 404") as info:
    sources.resolve(path, mirror=mirror, cache_dir=str(tmp_path / "cache"))
  assert "\n" not in str(info.value)


def test_local_data_dir_wins(served, closed_port_url, tmp_path, monkeypatch):
  path = SERVED[0]
  assert sources.resolve(path, data_dir=str(served), mirror=closed_port_url,
                         cache_dir=str(tmp_path / "cache")) == served / path
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(served))
  assert sources.resolve(path, mirror=closed_port_url,
                         cache_dir=str(tmp_path / "cache")) == served / path
  # Local copies are trusted without hashing.
  (served / path).write_bytes(b"0 edited by the user\n")
  assert sources.resolve(path, data_dir=str(served), mirror=closed_port_url) == served / path


def test_cached_file_reused_without_network(mirror, closed_port_url, tmp_path):
  cache = tmp_path / "cache"
  first = sources.resolve(SERVED[1], mirror=mirror, cache_dir=str(cache))
  again = sources.resolve(SERVED[1], mirror=closed_port_url, cache_dir=str(cache))
  assert again == first


def test_data_dir_without_the_file_falls_back_to_download(mirror, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  got = sources.resolve(SERVED[0], data_dir=str(empty), mirror=mirror,
                        cache_dir=str(tmp_path / "cache"))
  assert got == tmp_path / "cache" / SERVED[0]


def test_unknown_or_unsafe_paths(tmp_path):
  with pytest.raises(DataError, match="not a known downloadable file"):
    sources.resolve("text_classification/cr/custrev.all", cache_dir=str(tmp_path))
  for bad in ("/etc/passwd", "text_classification/../../x", ""):
    with pytest.raises(DataError, match="relative"):
      sources.resolve(bad, cache_dir=str(tmp_path))


def test_register():
  remote = sources.RemoteFile(path="extra/x.txt", url="http://127.0.0.1/x", sha256="0" * 64)
  try:
    sources.register(remote)
    sources.register(remote)  # idempotent
    assert sources.FILES["extra/x.txt"] == remote
    with pytest.raises(ValueError):
      sources.register(sources.RemoteFile(path="extra/x.txt", url="http://other", sha256="1" * 64))
  finally:
    sources.FILES.pop("extra/x.txt", None)
