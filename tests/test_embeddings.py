"""Tests for nets.embeddings: round trips per format, format detection, init of missing words, errors."""

import gzip

import numpy as np
import pytest

from nets.embeddings import FORMATS, load_vectors, save_text, save_word2vec_bin
from nets.errors import DataError

WORDS = ["the", "cat", "sat", "on", "mat", "Über"]
DIM = 5
VOCAB = ["<pad>", "<unk>", "the", "cat", "dog", "Über"]


def _vectors(n=len(WORDS), dim=DIM, seed=1):
  return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _write(path, fmt, words=WORDS, vectors=None, **kwargs):
  vectors = _vectors(len(words)) if vectors is None else vectors
  if fmt == "word2vec_bin":
    save_word2vec_bin(str(path), words, vectors, **kwargs)
  else:
    save_text(str(path), words, vectors, header=fmt == "word2vec_txt")
  return vectors


def _check_table(table, found, vectors):
  assert table.dtype == np.float32 and table.shape == (len(VOCAB), DIM)
  assert found == 3  # the, cat, Über
  np.testing.assert_array_equal(table[0], 0.0)
  np.testing.assert_array_equal(table[2], vectors[0])
  np.testing.assert_array_equal(table[3], vectors[1])
  np.testing.assert_array_equal(table[5], vectors[5])


@pytest.mark.parametrize("load_fmt", ["explicit", "auto"])
@pytest.mark.parametrize("fmt,suffix,kwargs", [
    ("word2vec_bin", ".bin", {}),
    ("word2vec_bin", ".bin", {"newline": False}),
    ("word2vec_txt", ".txt", {}),
    ("glove", ".txt", {}),
    ("word2vec_bin", ".bin.gz", {}),
    ("word2vec_txt", ".txt.gz", {}),
    ("glove", ".txt.gz", {}),
])
def test_round_trip(tmp_path, fmt, suffix, kwargs, load_fmt):
  path = tmp_path / f"vectors{suffix}"
  vectors = _write(path, fmt, **kwargs)
  if suffix.endswith(".gz"):
    assert path.read_bytes()[:2] == b"\x1f\x8b"
  table, found = load_vectors(str(path), VOCAB, fmt if load_fmt == "explicit" else "auto")
  _check_table(table, found, vectors)


def test_binary_with_newline_bytes_inside_vectors(tmp_path):
  # 10.0 as little-endian float32 contains no 0x0a, but 1.4e-44 is b"\x0a\x00\x00\x00": a word must not be
  # read from inside a vector, with or without the record newline.
  vectors = np.full((len(WORDS), DIM), np.frombuffer(b"\x0a\x00\x00\x00", "<f4")[0], np.float32)
  for newline in (True, False):
    path = tmp_path / f"nl{newline}.bin"
    save_word2vec_bin(str(path), WORDS, vectors, newline=newline)
    for fmt in ("word2vec_bin", "auto"):
      table, found = load_vectors(str(path), VOCAB, fmt)
      assert found == 3
      np.testing.assert_array_equal(table[2], vectors[0])


def test_missing_words_random_with_matching_variance(tmp_path):
  path = tmp_path / "big.txt"
  words = [f"w{i}" for i in range(2000)]
  vectors = _write(path, "glove", words=words, vectors=(_vectors(2000, 50) * 0.3))
  vocab = ["<pad>", "<unk>"] + words[:1000] + [f"missing{i}" for i in range(1000)]
  table, found = load_vectors(str(path), vocab, "glove", seed=3)
  assert found == 1000
  np.testing.assert_array_equal(table[2:1002], vectors[:1000])
  random_rows = table[1002:]
  a = np.sqrt(3 * vectors[:1000].astype(np.float64).var())
  assert np.abs(random_rows).max() <= a
  assert random_rows.var() == pytest.approx(vectors[:1000].var(), rel=0.05)
  np.testing.assert_array_equal(table[0], 0.0)
  assert np.any(table[1] != 0.0)  # <unk> is random, not zero

  again, _ = load_vectors(str(path), vocab, "glove", seed=3)
  np.testing.assert_array_equal(table, again)
  other, _ = load_vectors(str(path), vocab, "glove", seed=4)
  assert not np.array_equal(table[1002:], other[1002:])
  np.testing.assert_array_equal(table[2:1002], other[2:1002])


def test_init_scale_and_nothing_found(tmp_path):
  path = tmp_path / "v.txt"
  _write(path, "glove")
  vocab = ["<pad>", "<unk>"] + [f"x{i}" for i in range(500)]
  table, found = load_vectors(str(path), vocab, init_scale=0.01)
  assert found == 0 and table.shape == (502, DIM)
  assert np.abs(table).max() <= 0.01 and np.abs(table).max() > 0.009
  table, _ = load_vectors(str(path), vocab)  # nothing to match: Kim's 0.25
  assert np.abs(table).max() <= 0.25 and np.abs(table).max() > 0.24
  np.testing.assert_array_equal(table[0], 0.0)


def test_pad_row_is_zero_even_if_in_file(tmp_path):
  path = tmp_path / "v.bin"
  vectors = _write(path, "word2vec_bin", words=["<pad>", "the"], vectors=_vectors(2))
  table, found = load_vectors(str(path), ["<pad>", "<unk>", "the"])
  assert found == 1
  np.testing.assert_array_equal(table[0], 0.0)
  np.testing.assert_array_equal(table[2], vectors[1])


def test_lower_case_fallback(tmp_path):
  path = tmp_path / "v.bin"
  words = ["Paris", "paris", "London", "berlin"]
  vectors = _write(path, "word2vec_bin", words=words, vectors=_vectors(4))
  vocab = ["<pad>", "<unk>", "paris", "london", "Berlin", "BERLIN", "Paris"]
  table, found = load_vectors(str(path), vocab)
  assert found == 5
  np.testing.assert_array_equal(table[2], vectors[1])  # exact match beats the earlier "Paris"
  np.testing.assert_array_equal(table[3], vectors[2])  # london <- London
  np.testing.assert_array_equal(table[4], vectors[3])  # Berlin <- berlin
  np.testing.assert_array_equal(table[5], vectors[3])
  np.testing.assert_array_equal(table[6], vectors[0])  # exact


def test_first_occurrence_of_duplicate_word_wins(tmp_path):
  path = tmp_path / "v.txt"
  vectors = _write(path, "word2vec_txt", words=["a", "a"], vectors=_vectors(2))
  table, found = load_vectors(str(path), ["<pad>", "<unk>", "a"])
  assert found == 1
  np.testing.assert_array_equal(table[2], vectors[0])


def test_glove_word_with_space(tmp_path):
  path = tmp_path / "v.txt"
  vectors = _write(path, "glove", words=["the", "new york", ". . ."], vectors=_vectors(3))
  table, found = load_vectors(str(path), ["<pad>", "<unk>", "new york", ". . .", "york"])
  assert found == 2
  np.testing.assert_array_equal(table[2], vectors[1])
  np.testing.assert_array_equal(table[3], vectors[2])


def test_glove_numeric_word_first_line(tmp_path):
  path = tmp_path / "v.txt"
  vectors = _write(path, "glove", words=["1", "two"], vectors=_vectors(2))
  table, found = load_vectors(str(path), ["<pad>", "<unk>", "1", "two"], "glove")
  assert found == 2
  np.testing.assert_array_equal(table[2], vectors[0])


def test_dtype(tmp_path):
  path = tmp_path / "v.txt"
  _write(path, "glove")
  table, _ = load_vectors(str(path), VOCAB, dtype=np.float64)
  assert table.dtype == np.float64


def _assert_one_line_data_error(fn, *match):
  with pytest.raises(DataError) as info:
    fn()
  message = str(info.value)
  assert message and "\n" not in message
  for m in match:
    assert m in message
  return message


def test_error_missing_file(tmp_path):
  path = str(tmp_path / "nope.bin")
  _assert_one_line_data_error(lambda: load_vectors(path, VOCAB),
                              f"embeddings file not found: {path} (--embeddings)")


def test_error_unknown_format(tmp_path):
  path = tmp_path / "v.txt"
  _write(path, "glove")
  message = _assert_one_line_data_error(lambda: load_vectors(str(path), VOCAB, "fasttext"), "fasttext")
  assert all(f in message for f in FORMATS)


@pytest.mark.parametrize("fmt,header", [("glove", False), ("word2vec_txt", True)])
def test_error_inconsistent_dimensions(tmp_path, fmt, header):
  path = tmp_path / "v.txt"
  lines = ["the 1 2 3", "cat 4 5 6", "sat 7 8", "on 1 2 3"]
  path.write_text(("3 3\n" if header else "") + "\n".join(lines) + "\n")
  line_number = 4 if header else 3
  for load_fmt in (fmt, "auto"):
    _assert_one_line_data_error(lambda: load_vectors(str(path), VOCAB, load_fmt), f"line {line_number}")


def test_error_non_numeric_vector_entry(tmp_path):
  path = tmp_path / "v.txt"
  path.write_text("the 1 2 3\ncat 4 x 6\n")
  _assert_one_line_data_error(lambda: load_vectors(str(path), VOCAB, "glove"), "line 2")


@pytest.mark.parametrize("cut", [2, 4 * DIM, 4 * DIM + 4])  # 1 would only drop the optional final newline
def test_error_truncated_binary(tmp_path, cut):
  path = tmp_path / "v.bin"
  _write(path, "word2vec_bin")
  data = path.read_bytes()
  path.write_bytes(data[:-cut])
  for fmt in ("word2vec_bin", "auto"):
    _assert_one_line_data_error(lambda: load_vectors(str(path), VOCAB, fmt), "truncated")


def test_error_truncated_gzip(tmp_path):
  path = tmp_path / "v.txt.gz"
  _write(path, "glove", words=[f"w{i}" for i in range(200)], vectors=_vectors(200))
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  _assert_one_line_data_error(lambda: load_vectors(str(path), VOCAB, "glove"), "re-download")


@pytest.mark.parametrize("content", [b"", b"\n\n", b"0 300\n"])
def test_error_no_vectors(tmp_path, content):
  path = tmp_path / "v.txt"
  path.write_bytes(content)
  for fmt in ("auto", "glove", "word2vec_txt", "word2vec_bin"):
    _assert_one_line_data_error(lambda: load_vectors(str(path), VOCAB, fmt))


def test_error_wrong_explicit_format(tmp_path):
  path = tmp_path / "v.txt"
  _write(path, "word2vec_txt")
  _assert_one_line_data_error(lambda: load_vectors(str(path), VOCAB, "glove"), "word2vec_txt")
  glove = tmp_path / "g.txt"
  _write(glove, "glove")
  _assert_one_line_data_error(lambda: load_vectors(str(glove), VOCAB, "word2vec_bin"), "header")
  _assert_one_line_data_error(lambda: load_vectors(str(glove), VOCAB, "word2vec_txt"), "header")


def test_gzip_written_by_hand_is_read(tmp_path):
  path = tmp_path / "v.gz"
  with gzip.open(path, "wt") as f:
    f.write("the 1 2\ncat 3 4\n")
  table, found = load_vectors(str(path), ["<pad>", "<unk>", "cat"])
  assert found == 1
  np.testing.assert_array_equal(table[2], [3, 4])
