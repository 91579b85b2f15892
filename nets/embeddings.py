"""Pretrained word vectors (word2vec, GloVe) as an embedding table for a vocabulary.

Kim (2014) initialises the sentence CNN's embeddings from the 300-d GoogleNews
word2vec vectors; words missing from them get rows drawn from U[-a, a], with `a`
chosen so the random rows have the same variance as the pretrained ones.

Files are streamed (GoogleNews is 3.6 GB): only vectors of vocabulary words are
kept. Word lookup is an exact match first; a vocabulary word with no exact match
takes the vector of the first file word equal to it after lower-casing both.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import zlib
from collections.abc import Iterator
from typing import BinaryIO, Callable

import numpy as np
from tqdm import tqdm

from nets.errors import ConfigError, DataError

FORMATS = ("auto", "word2vec_bin", "word2vec_txt", "glove")

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_PROGRESS_MIN_BYTES = 10 * (1 << 20)
_WHITESPACE = b" \t\r\n"
_FALLBACK_SCALE = 0.25  # Kim's U[-0.25, 0.25] when there is no variance to match.


def load_vectors(path: str, vocab_itos: list[str], fmt: str = "auto", *,
                 seed: int = 0, init_scale: float | None = None,
                 dtype=np.float32) -> tuple[np.ndarray, int]:
  """Returns (table [len(vocab_itos), D], number of vocabulary words found in the file).

  Row 0 (padding) is zeros. Rows of words not in the file, "<unk>" included, are
  U[-a, a] from a Generator seeded with `seed`: a = init_scale if given, else
  sqrt(3 * var(loaded vectors)), or 0.25 if no word was found. The random draw
  depends only on (seed, table shape), so it does not shift when the file changes.
  """
  if fmt not in FORMATS:
    raise DataError(f"unknown embeddings format {fmt!r}: use one of {', '.join(FORMATS)}")
  if init_scale is not None and init_scale < 0:
    raise ConfigError(f"init_scale must be >= 0, got {init_scale}")
  if not os.path.isfile(path):
    raise DataError(f"embeddings file not found: {path} (--embeddings)")
  if fmt == "auto":
    fmt = _detect_format(path)

  matcher = _VocabMatcher(vocab_itos)
  try:
    with _open(path) as (stream, progress):
      if fmt == "word2vec_bin":
        dim, num_read = _read_word2vec_bin(path, stream, progress, matcher)
      else:
        dim, num_read = _read_text(path, stream, progress, matcher, has_header=fmt == "word2vec_txt")
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise DataError(f"cannot decompress {path} ({e}): the .gz file is corrupt or truncated; re-download it") from e
  if num_read == 0:
    raise DataError(f"embeddings file {path} holds no vectors: check the file and --embeddings")

  rows = matcher.rows()
  if init_scale is None:
    loaded = np.stack(list(rows.values())) if rows else None
    init_scale = float(np.sqrt(3.0 * loaded.var())) if loaded is not None else _FALLBACK_SCALE
  rng = np.random.default_rng(seed)
  table = rng.uniform(-init_scale, init_scale, size=(len(vocab_itos), dim))
  for index, vector in rows.items():
    table[index] = vector
  if len(vocab_itos):
    table[0] = 0.0
  return table.astype(dtype), len(rows)


class _VocabMatcher:
  """Collects vectors of vocabulary words while the file streams past."""

  def __init__(self, vocab_itos: list[str]):
    # Row 0 is padding: never looked up.
    self._exact = {w.encode("utf-8"): i for i, w in enumerate(vocab_itos) if i > 0}
    self._lower: dict[str, list[int]] = {}
    for i, w in enumerate(vocab_itos):
      if i > 0:
        self._lower.setdefault(w.lower(), []).append(i)
    self._found: dict[int, np.ndarray] = {}
    self._found_lower: dict[str, np.ndarray] = {}

  def add(self, word: bytes, parse_vector: Callable[[], np.ndarray]) -> None:
    """Keeps the vector (parsed lazily: most file words are not in the vocabulary)."""
    vector = None
    index = self._exact.get(word)
    if index is not None and index not in self._found:  # first occurrence wins
      vector = parse_vector()
      self._found[index] = vector
    lowered = word.decode("utf-8", errors="replace").lower()
    if lowered in self._lower and lowered not in self._found_lower:
      self._found_lower[lowered] = vector if vector is not None else parse_vector()

  def rows(self) -> dict[int, np.ndarray]:
    """Vocabulary index -> vector: exact matches, then lower-case matches for the rest."""
    rows = dict(self._found)
    for lowered, vector in self._found_lower.items():
      for index in self._lower[lowered]:
        rows.setdefault(index, vector)
    return rows


@contextlib.contextmanager
def _open(path: str, show_progress: bool = True) -> Iterator[tuple[BinaryIO, Callable[[], None]]]:
  """Opens `path` (gzip or plain) for binary reading, with a progress callback.

  The bar counts bytes of the file on disk, so it also works for .gz files.
  """
  size = os.path.getsize(path)
  with open(path, "rb") as raw:
    is_gzip = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {os.path.basename(path)}",
              file=sys.stderr, disable=not show_progress or size < _PROGRESS_MIN_BYTES) as bar:

      def progress():
        bar.update(raw.tell() - bar.n)

      try:
        yield stream, progress
      finally:
        if is_gzip:
          stream.close()


def _parse_header(line: bytes) -> tuple[int, int] | None:
  """(V, D) if the line is two integers, the word2vec header; else None."""
  fields = line.split()
  if len(fields) != 2:
    return None
  try:
    return int(fields[0]), int(fields[1])
  except ValueError:
    return None


def _is_float(field: bytes) -> bool:
  try:
    float(field)
    return True
  except ValueError:
    return False


def _detect_format(path: str) -> str:
  """word2vec_txt / word2vec_bin if the first line is "V D" (told apart by the next record), else glove."""
  try:
    with _open(path, show_progress=False) as (stream, _):
      header = _parse_header(stream.readline(_CHUNK))
      if header is None:
        return "glove"
      dim = header[1]
      # A text record is the word then D numbers of at most ~32 characters each.
      record = stream.readline(32 * (dim + 1) + 1024)
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise DataError(f"cannot decompress {path} ({e}): the .gz file is corrupt or truncated; re-download it") from e
  try:
    record.decode("utf-8")
  except UnicodeDecodeError:
    return "word2vec_bin"
  fields = record.split()
  if dim > 0 and len(fields) >= dim + 1 and all(_is_float(f) for f in fields[-dim:]):
    return "word2vec_txt"
  return "word2vec_bin"


def _read_text(path: str, stream: BinaryIO, progress: Callable[[], None],
               matcher: _VocabMatcher, has_header: bool) -> tuple[int, int]:
  """Reads "word v1 ... vD" lines; returns (D, number of vectors read).

  The vector is the last D fields and the word is everything before them, so
  words containing spaces (some GloVe files have them) survive.
  """
  fmt = "word2vec_txt" if has_header else "glove"
  first = stream.readline()
  header = _parse_header(first)
  if has_header:
    if header is None or header[1] <= 0:
      raise DataError(f"{path} line 1: expected a 'V D' header for word2vec_txt; pass fmt='glove' or 'auto'")
    dim = header[1]
    pending = []
  else:
    if header is not None:
      raise DataError(f"{path} line 1 is a word2vec 'V D' header, not a GloVe line; pass fmt='word2vec_txt' or 'auto'")
    # D = the run of numbers ending the first line; the word keeps at least one field.
    fields = first.split()
    dim = 0
    while dim < len(fields) - 1 and _is_float(fields[-1 - dim]):
      dim += 1
    if dim == 0:
      raise DataError(f"{path} line 1: no numbers after the word; this is not a word-vector file")
    pending = [first]

  num_read = 0
  line_number = 0 if pending else 1
  for lines in (pending, stream):
    for line in lines:
      line_number += 1
      if line_number % 10_000 == 0:
        progress()
      fields = line.rsplit(None, dim)
      if not fields:
        continue  # blank line
      if len(fields) < dim + 1:
        raise DataError(f"{path} line {line_number}: {len(fields) - 1} numbers after the word, expected {dim}; "
                        f"the file is corrupt or not {fmt}")

      def parse_vector(fields=fields, line_number=line_number):
        try:
          return np.array([float(x) for x in fields[1:]], np.float64)
        except ValueError:
          raise DataError(f"{path} line {line_number}: a vector entry is not a number; "
                          f"the file is corrupt or not {fmt}") from None

      matcher.add(fields[0], parse_vector)
      num_read += 1
  progress()
  return dim, num_read


class _ByteReader:
  """Buffered reads of a binary stream by delimiter or byte count (word2vec_bin has no line structure)."""

  def __init__(self, stream: BinaryIO, progress: Callable[[], None]):
    self._stream = stream
    self._progress = progress
    self._buf = b""
    self._pos = 0

  def _fill(self) -> bool:
    chunk = self._stream.read(_CHUNK)
    self._progress()
    if not chunk:
      return False
    self._buf = self._buf[self._pos:] + chunk
    self._pos = 0
    return True

  def skip_whitespace(self) -> bool:
    """Skips whitespace (the optional newline after a record); False at end of file."""
    while True:
      while self._pos < len(self._buf) and self._buf[self._pos] in _WHITESPACE:
        self._pos += 1
      if self._pos < len(self._buf):
        return True
      if not self._fill():
        return False

  def read_until(self, delimiter: bytes) -> bytes | None:
    """Bytes up to (not including) `delimiter`, which is consumed; None at end of file."""
    start = self._pos
    while (end := self._buf.find(delimiter, start)) < 0:
      start = len(self._buf) - self._pos  # offset of unsearched bytes after _fill drops the consumed ones
      if not self._fill():
        return None
    data = self._buf[self._pos:end]
    self._pos = end + len(delimiter)
    return data

  def read_exact(self, n: int) -> bytes | None:
    while len(self._buf) - self._pos < n:
      if not self._fill():
        return None
    data = self._buf[self._pos:self._pos + n]
    self._pos += n
    return data


def _read_word2vec_bin(path: str, stream: BinaryIO, progress: Callable[[], None],
                       matcher: _VocabMatcher) -> tuple[int, int]:
  """Reads the GoogleNews binary format; returns (D, number of vectors read)."""
  header = _parse_header(stream.readline(_CHUNK))
  if header is None or header[0] < 0 or header[1] <= 0:
    raise DataError(f"{path} line 1: expected a 'V D' header for word2vec_bin; pass fmt='glove' or 'auto'")
  num_words, dim = header
  reader = _ByteReader(stream, progress)
  for i in range(num_words):
    word = reader.read_until(b" ") if reader.skip_whitespace() else None
    data = reader.read_exact(4 * dim) if word is not None else None
    if data is None:
      raise DataError(f"{path} is truncated: it ends inside vector {i + 1} of {num_words}; re-download it")
    matcher.add(word, lambda data=data: np.frombuffer(data, "<f4").astype(np.float64))
  return dim, num_words


def _check_words_and_vectors(words: list[str], vectors: np.ndarray) -> np.ndarray:
  vectors = np.asarray(vectors)
  if vectors.ndim != 2 or vectors.shape[0] != len(words):
    raise ValueError(f"need vectors of shape [{len(words)}, D], got {vectors.shape}")
  return vectors


def _open_for_writing(path: str) -> BinaryIO:
  return gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb")


def save_word2vec_bin(path: str, words: list[str], vectors: np.ndarray, *, newline: bool = True) -> None:
  """Writes the GoogleNews binary format (gzip if `path` ends in .gz).

  newline=False omits the "\\n" after each record, as some writers do.
  """
  vectors = _check_words_and_vectors(words, vectors)
  with _open_for_writing(path) as f:
    f.write(f"{len(words)} {vectors.shape[1]}\n".encode("ascii"))
    for word, vector in zip(words, vectors):
      if not word or any(c.isspace() for c in word):
        raise ValueError(f"word2vec_bin words cannot be empty or contain whitespace: {word!r}")
      f.write(word.encode("utf-8") + b" " + vector.astype("<f4").tobytes() + (b"\n" if newline else b""))


def save_text(path: str, words: list[str], vectors: np.ndarray, header: bool) -> None:
  """Writes word2vec_txt (header=True) or glove (header=False); gzip if `path` ends in .gz."""
  vectors = _check_words_and_vectors(words, vectors)
  with _open_for_writing(path) as f:
    if header:
      f.write(f"{len(words)} {vectors.shape[1]}\n".encode("ascii"))
    for word, vector in zip(words, vectors):
      if not word.strip() or "\n" in word:
        raise ValueError(f"words cannot be blank or contain newlines: {word!r}")
      # %.9g round-trips float32 exactly.
      numbers = " ".join("%.9g" % x for x in vector.astype(np.float32))
      f.write(f"{word} {numbers}\n".encode("utf-8"))
