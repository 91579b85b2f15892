"""The "translation" data kind: parallel sentences for nets.seq2seq.

Sources:
  multi30k          Multi30k task 1 (Elliott et al. 2016), German -> English by default
                    (`--src_lang=en --tgt_lang=de` flips it): train 29000, valid 1014, test
                    = test_2016_flickr 1000 pairs, read from the gzip files of the local
                    copy, the cache or the pinned public source (nets.data.sources).
  files             `--train_src_file/--train_tgt_file` (plain or .gz, line i translates
                    line i), likewise valid_ and test_; without validation files
                    `--valid_fraction` of the training pairs is held out.
  tfds:NAME         any translation dataset of the TFDS catalog, e.g.
                    tfds:ted_hrlr_translate/pt_to_en; languages are --src_lang/--tgt_lang
                    if both are keys of its examples, else its supervised keys.

Tokenization (one tokenizer per language, fitted on the training text only):
  words (default)   lower-case, then words (letters/digits, with inner hyphens and
                    apostrophes: "t-shirt", "man's") and single punctuation marks;
                    a word seen fewer than `--min_freq` times in training maps to <unk>.
                    Detokenising joins with spaces and re-attaches punctuation; BLEU is then
                    computed case-insensitively (sacreBLEU lowercase=True).
  sentencepiece     `--subword_vocab_size=N`: a unigram model of N pieces per language, case
                    kept, trained on the training text; BLEU is cased.
Ids 0..3 are <pad>, <unk>, <s> (BOS), </s> (EOS) in every vocabulary.

Arrays (static shapes): "tokens" int32 [N, L, 2] with the source ids in [..., 0] and the
target ids + EOS in [..., 1], zero-padded; "src_length", "tgt_length" (EOS included) and
"length" = max of both, which the shared pipeline's length buckets use to trim "tokens"
(both sides at once). L = `--max_len`, or the longest training pair (capped at 512);
longer training pairs are dropped (a truncated target would teach a wrong ending),
evaluation pairs are padded to their own split's longest pair.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import gzip
import os
import pathlib
import re

import numpy as np

from nets.data import sources
from nets.errors import ConfigError, DataError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
MAX_LEN_CAP = 512

# --- Multi30k ---------------------------------------------------------------------------

MULTI30K = "multi30k"
_M30K_REPO = ("multi30k/dataset", "a3d2e0d26b56f3846f66a952536ffed4e401d05a")
MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
MULTI30K_LANGS = ("de", "en")
_M30K_SHA256 = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
}
for _name, _digest in _M30K_SHA256.items():
  sources.register(sources.RemoteFile(
      path=f"multi30k/{_name}",
      url=(f"https://raw.githubusercontent.com/{_M30K_REPO[0]}/{_M30K_REPO[1]}/"
           f"data/task1/raw/{_name}"),
      sha256=_digest))


def content_ids(ids) -> list[int]:
  """The ids a decoder produced before EOS, without PAD and BOS."""
  out = []
  for i in map(int, ids):
    if i == EOS:
      break
    if i not in (PAD, BOS):
      out.append(i)
  return out


@dataclasses.dataclass
class ParallelSplits:
  """(source sentences, target sentences) per split, untokenised; None: no such split."""

  train: tuple
  valid: tuple | None
  test: tuple | None
  name: str = ""
  src_lang: str = ""
  tgt_lang: str = ""


# --- reading ------------------------------------------------------------------------------

def read_lines(path, what: str = "file") -> list[str]:
  """Sentences of a text file (plain or .gz), one per line: split on '\\n' only, '\\r'
  stripped, UTF-8 with a per-line Latin-1 fallback."""
  try:
    data = pathlib.Path(path).read_bytes()
    if str(path).endswith(".gz"):
      data = gzip.decompress(data)
  except FileNotFoundError:
    raise DataError(f"{what} not found: {path}") from None
  except (OSError, EOFError) as e:
    raise DataError(f"cannot read {what} {path} ({getattr(e, 'strerror', None) or e})"
                    ) from None
  lines = data.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  out = []
  for raw in lines:
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError:
      line = raw.decode("latin-1")
    out.append(line.rstrip("\r"))
  return out


def read_parallel(src_path, tgt_path, what: str) -> tuple[list[str], list[str]]:
  src = read_lines(src_path, f"{what} source file")
  tgt = read_lines(tgt_path, f"{what} target file")
  if len(src) != len(tgt):
    raise DataError(f"{what} files are not parallel: {src_path} has {len(src)} lines, "
                    f"{tgt_path} has {len(tgt)}")
  if not src:
    raise DataError(f"{what} files {src_path} and {tgt_path} are empty")
  return src, tgt


def load_raw(cfg) -> ParallelSplits:
  mc = cfg.model_config
  if mc.train_src_file or mc.train_tgt_file:
    if not (mc.train_src_file and mc.train_tgt_file):
      raise ConfigError("--train_src_file and --train_tgt_file go together: pass both")
    if cfg.dataset.startswith("tfds:"):
      raise ConfigError(f"--dataset={cfg.dataset} and --train_src_file exclude each other")
    splits = {"train": read_parallel(mc.train_src_file, mc.train_tgt_file, "training")}
    for split in ("valid", "test"):
      src, tgt = getattr(mc, f"{split}_src_file"), getattr(mc, f"{split}_tgt_file")
      if bool(src) != bool(tgt):
        raise ConfigError(f"--{split}_src_file and --{split}_tgt_file go together")
      splits[split] = read_parallel(src, tgt, split) if src else None
    return ParallelSplits(splits["train"], splits["valid"], splits["test"], name="file",
                          src_lang=mc.src_lang, tgt_lang=mc.tgt_lang)
  if cfg.dataset == MULTI30K:
    return _load_multi30k(cfg)
  if cfg.dataset.startswith("tfds:"):
    return _load_tfds(cfg.dataset[len("tfds:"):], cfg.data_dir or None, mc.src_lang,
                      mc.tgt_lang)
  if cfg.dataset == "file":
    raise ConfigError("--dataset=file needs --train_src_file and --train_tgt_file")
  raise ConfigError(f"--dataset={cfg.dataset}: a translation model reads multi30k, "
                    "tfds:NAME (a translation dataset) or --train_src_file/--train_tgt_file")


def _load_multi30k(cfg) -> ParallelSplits:
  mc = cfg.model_config
  for flag, lang in (("src_lang", mc.src_lang), ("tgt_lang", mc.tgt_lang)):
    if lang not in MULTI30K_LANGS:
      raise ConfigError(f"--{flag}={lang}: multi30k here has "
                        f"{', '.join(MULTI30K_LANGS)}")
  splits = {}
  for split, stem in MULTI30K_SPLITS.items():
    paths = [sources.resolve(f"multi30k/{stem}.{lang}.gz", data_dir=cfg.data_dir or None,
                             mirror=cfg.data_mirror or None)
             for lang in (mc.src_lang, mc.tgt_lang)]
    splits[split] = read_parallel(*paths, f"multi30k {split}")
  return ParallelSplits(splits["train"], splits["valid"], splits["test"], name=MULTI30K,
                        src_lang=mc.src_lang, tgt_lang=mc.tgt_lang)


def _load_tfds(name: str, data_dir, src_lang: str, tgt_lang: str) -> ParallelSplits:
  tfds, builder = sources.tfds_builder(name, data_dir)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (imported by the helper)
  keys = list(builder.info.features.keys())
  if src_lang in keys and tgt_lang in keys:
    langs = (src_lang, tgt_lang)
  elif builder.info.supervised_keys and len(builder.info.supervised_keys) == 2:
    langs = tuple(builder.info.supervised_keys)
  else:
    raise DataError(f"--dataset=tfds:{name} has features {', '.join(keys)}: pass them as "
                    "--src_lang and --tgt_lang")

  def read(split):
    ds = sources.tfds_split(builder, split)
    if ds is None:
      return None
    src, tgt = [], []
    # Batches, never batch_size=-1: that needs the split size, unknown under mocking.
    for batch in tfds.as_numpy(ds.map(lambda ex: (ex[langs[0]], ex[langs[1]])).batch(4096)):
      src += [_text(s) for s in batch[0]]
      tgt += [_text(t) for t in batch[1]]
    return (src, tgt) if src else None

  train = read("train")
  if not train:
    raise DataError(f"--dataset=tfds:{name} has no train split")
  return ParallelSplits(train, read("validation"), read("test"), name=f"tfds:{name}",
                        src_lang=langs[0], tgt_lang=langs[1])


def _text(value) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- tokenizers ---------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:%)\]}])")
_NO_SPACE_AFTER = re.compile(r"([(\[{]) ")


def tokenize(text: str) -> list[str]:
  """The default word tokenizer: lower-case; words with inner hyphens/apostrophes kept
  whole; every other non-space, non-word character is a token of its own."""
  return _WORD.findall(text.lower())


def detokenize(tokens) -> str:
  """Tokens back to text: spaces between, none before . , ! ? ; : % ) or after (."""
  text = " ".join(tokens)
  return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


class WordTokenizer:
  """Lower-casing word tokenizer with a vocabulary from training text (specials 0..3)."""

  kind = "words"
  lowercase = True

  def __init__(self, itos):
    if tuple(itos[:4]) != SPECIALS:
      raise DataError(f"a translation vocabulary starts with {', '.join(SPECIALS)}")
    self.itos = list(itos)
    self.stoi = {t: i for i, t in enumerate(self.itos)}

  @classmethod
  def fit(cls, texts, min_freq: int = 1) -> "WordTokenizer":
    counts = collections.Counter(t for text in texts for t in tokenize(text))
    kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS),
                  key=lambda t: (-counts[t], t))
    return cls([*SPECIALS, *kept])

  def encode(self, text: str) -> list[int]:
    return [self.stoi.get(t, UNK) for t in tokenize(text)]

  def pieces(self, text: str) -> list[str]:
    """The tokens of `text` as the model reads them (unknown words as they are)."""
    return tokenize(text)

  def tokens(self, ids) -> list[str]:
    """Ids up to EOS as tokens (no specials except <unk>)."""
    return [self.itos[i] for i in content_ids(ids)]

  def decode(self, ids) -> str:
    return detokenize(self.tokens(ids))

  def describe(self) -> dict:
    return {"kind": self.kind, "itos": self.itos}

  def __len__(self) -> int:
    return len(self.itos)


class SubwordTokenizer:
  """sentencepiece unigram pieces (case kept), ids 0..3 = the shared specials."""

  kind = "sentencepiece"
  lowercase = False

  def __init__(self, model_proto: bytes):
    spm = _sentencepiece()
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

  @classmethod
  def fit(cls, texts, vocab_size: int) -> "SubwordTokenizer":
    import io  # pylint: disable=g-import-not-at-top
    spm = _sentencepiece()
    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter([t for t in texts if t.strip()]), model_writer=model,
          vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
          pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, hard_vocab_limit=False,
          minloglevel=2)
    except RuntimeError as e:
      raise ConfigError(f"--subword_vocab_size={vocab_size}: sentencepiece failed "
                        f"({' '.join(str(e).split())[:200]})") from None
    return cls(model.getvalue())

  def encode(self, text: str) -> list[int]:
    return list(self.sp.encode(text))

  def pieces(self, text: str) -> list[str]:
    return list(self.sp.encode(text, out_type=str))

  def tokens(self, ids) -> list[str]:
    return [self.sp.id_to_piece(i) for i in content_ids(ids)]

  def decode(self, ids) -> str:
    kept = []
    for i in ids:
      if int(i) == EOS:
        break
      if int(i) not in (PAD, BOS):
        kept.append(int(i))
    return self.sp.decode(kept)

  def describe(self) -> dict:
    return {"kind": self.kind, "model": base64.b64encode(self.model_proto).decode("ascii")}

  def __len__(self) -> int:
    return self.sp.get_piece_size()


def _sentencepiece():
  try:
    import sentencepiece  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError("--subword_vocab_size needs sentencepiece: pip install "
                      "'nets[subword]' (or use the word tokenizer, "
                      "--subword_vocab_size=0)") from None
  return sentencepiece


def tokenizer_from(description: dict):
  if description["kind"] == "sentencepiece":
    return SubwordTokenizer(base64.b64decode(description["model"]))
  return WordTokenizer(description["itos"])


def tokenizers(data) -> tuple:
  """(source, target) tokenizers of a prepared or restored Data."""
  return (tokenizer_from(data.info["src_tokenizer"]),
          tokenizer_from(data.info["tgt_tokenizer"]))


# --- arrays -------------------------------------------------------------------------------

def encode_pairs(src_ids: list, tgt_ids: list, max_len: int) -> dict:
  """Id lists -> the padded arrays (see the module docstring); truncates to max_len."""
  n = len(src_ids)
  tokens = np.zeros((n, max_len, 2), np.int32)
  src_length = np.zeros((n,), np.int32)
  tgt_length = np.zeros((n,), np.int32)
  for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
    s, t = s[:max_len], (list(t) + [EOS])[:max_len]
    tokens[i, :len(s), 0] = s
    tokens[i, :len(t), 1] = t
    src_length[i], tgt_length[i] = len(s), len(t)
  return {"tokens": tokens, "src_length": src_length, "tgt_length": tgt_length,
          "length": np.maximum(src_length, tgt_length)}


def _pair_length(s, t) -> int:
  return max(len(s), len(t) + 1)


def encode_split(pair: tuple, src_tok, tgt_tok, max_len: int = 0) -> dict:
  """Sentences -> arrays padded to `max_len` (0: this split's longest pair, capped)."""
  src_ids = [src_tok.encode(s) for s in pair[0]]
  tgt_ids = [tgt_tok.encode(t) for t in pair[1]]
  longest = max((_pair_length(s, t) for s, t in zip(src_ids, tgt_ids)), default=1)
  return encode_pairs(src_ids, tgt_ids, max_len or min(max(longest, 1), MAX_LEN_CAP))


def prepare(raw: ParallelSplits, cfg, fold: int = 0):
  """Tokenizers from the training text only; padded arrays (see the module docstring)."""
  from nets.data.datasets import Data  # pylint: disable=g-import-not-at-top
  del fold  # no cross-validation for translation
  mc = cfg.model_config
  train, valid = raw.train, raw.valid
  if valid is None:  # hold out --valid_fraction of the training pairs
    perm = np.random.default_rng([cfg.data_seed, 7]).permutation(len(train[0]))
    cut = max(1, int(len(perm) * cfg.valid_fraction))
    pick = lambda idx: ([train[0][i] for i in idx], [train[1][i] for i in idx])
    train, valid = pick(np.sort(perm[cut:])), pick(np.sort(perm[:cut]))
  if mc.subword_vocab_size:
    src_tok = SubwordTokenizer.fit(train[0], mc.subword_vocab_size)
    tgt_tok = SubwordTokenizer.fit(train[1], mc.subword_vocab_size)
  else:
    src_tok = WordTokenizer.fit(train[0], cfg.min_freq)
    tgt_tok = WordTokenizer.fit(train[1], cfg.min_freq)
  src_ids = [src_tok.encode(s) for s in train[0]]
  tgt_ids = [tgt_tok.encode(t) for t in train[1]]
  keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids)) if s and t]  # no empty side
  longest = max((_pair_length(src_ids[i], tgt_ids[i]) for i in keep), default=0)
  if not keep:
    raise DataError("no training pair has words on both sides")
  max_len = cfg.max_len or min(longest, MAX_LEN_CAP)
  dropped = sum(1 for i in keep if _pair_length(src_ids[i], tgt_ids[i]) > max_len)
  keep = [i for i in keep if _pair_length(src_ids[i], tgt_ids[i]) <= max_len]
  if not keep:
    raise ConfigError(f"--max_len={max_len}: every training pair is longer")
  train_arrays = encode_pairs([src_ids[i] for i in keep], [tgt_ids[i] for i in keep],
                              max_len)
  evaluation = lambda pair: encode_split(pair, src_tok, tgt_tok) if pair else None
  return Data(
      train=train_arrays, valid=evaluation(valid), test=evaluation(raw.test),
      num_outputs=len(tgt_tok), name=raw.name, vocab=None, max_len=max_len,
      info={"src_tokenizer": src_tok.describe(), "tgt_tokenizer": tgt_tok.describe(),
            "src_vocab_size": len(src_tok), "tgt_vocab_size": len(tgt_tok),
            "src_lang": raw.src_lang, "tgt_lang": raw.tgt_lang,
            "lowercase": src_tok.lowercase, "max_len": max_len,
            "dropped_long_training_pairs": dropped})


def encode_file(path: str, data, cfg=None) -> dict:
  del path, data, cfg
  raise ConfigError("a translation run evaluates parallel files: pass --test_src_file and "
                    "--test_tgt_file instead of --test_file")


def evaluate_files(trainer, params, src_file: str, tgt_file: str, *, batch_size: int,
                   beam_size: int = 1, length_penalty: float = 1.0) -> dict:
  """BLEU (decoding) and perplexity (teacher forcing) of a trained run on parallel files."""
  from nets import translate  # pylint: disable=g-import-not-at-top
  if not (src_file and tgt_file):
    raise ConfigError("a translation run evaluates parallel files: pass --test_src_file and "
                      "--test_tgt_file")
  return translate.evaluate(trainer, params, read_parallel(src_file, tgt_file, "test"),
                            batch_size=batch_size, beam_size=beam_size,
                            length_penalty=length_penalty)
