"""Translating text with a trained seq2seq run: batching, decoding, BLEU, attention plots.

Sentences are encoded with the run's source tokenizer, sorted by length and decoded in
batches of a fixed size whose source length is rounded up to a multiple of 8, so a whole
file compiles the decoder only a few times. Decoding runs a fixed number of steps
(`max_decode_len`, default the run's padded training length) with an EOS mask
(nets.seq2seq.greedy_decode / beam_decode). BLEU is sacreBLEU's corpus BLEU on the
detokenised output against the raw reference lines (case-insensitive for the lower-casing
word tokenizer).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nets import seq2seq
from nets.data import translation
from nets.errors import ConfigError

LENGTH_MULTIPLE = 8


@dataclasses.dataclass
class Translation:
  text: str                 # detokenised output
  tokens: list              # output tokens up to (without) EOS
  source_tokens: list       # the source as the model read it
  attention: np.ndarray     # [output steps incl. EOS if emitted, source tokens]


def _check(beam_size: int, length_penalty: float, batch_size: int, max_decode_len: int):
  if beam_size < 1:
    raise ConfigError(f"--beam_size={beam_size}: must be >= 1")
  if length_penalty < 0:
    raise ConfigError(f"--length_penalty={length_penalty}: must be >= 0")
  if batch_size < 1:
    raise ConfigError(f"--batch_size={batch_size}: must be >= 1")
  if max_decode_len < 0:
    raise ConfigError(f"--max_decode_len={max_decode_len}: must be >= 0")


def translate(network, params, data, texts, *, beam_size: int = 1,
              length_penalty: float = 1.0, batch_size: int = 64,
              max_decode_len: int = 0) -> list[Translation]:
  """Translations of `texts` (in order) by a run's network and params."""
  _check(beam_size, length_penalty, batch_size, max_decode_len)
  src_tok, tgt_tok = translation.tokenizers(data)
  ids = [src_tok.encode(t) for t in texts]
  steps = max_decode_len or int(data.info["max_len"])
  order = np.argsort([len(i) for i in ids], kind="stable")
  results = [None] * len(texts)
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    longest = max(max(len(ids[r]) for r in rows), 1)
    S = -(-longest // LENGTH_MULTIPLE) * LENGTH_MULTIPLE
    src = np.zeros((batch_size, S), np.int32)  # padding rows: empty sources, ignored
    length = np.zeros((batch_size,), np.int32)
    for b, r in enumerate(rows):
      src[b, :len(ids[r])] = ids[r]
      length[b] = len(ids[r])
    if beam_size == 1:
      out, att = seq2seq.greedy_decode(network, params, src, length, steps)
    else:
      out, att, _ = seq2seq.beam_decode(network, params, src, length, steps, beam_size,
                                        np.float32(length_penalty))
    out, att = np.asarray(out), np.asarray(att)
    for b, r in enumerate(rows):
      tokens = tgt_tok.tokens(out[b])
      emitted = min(len(tokens) + 1, steps)  # the EOS step too, when there was one
      results[r] = Translation(text=tgt_tok.decode(out[b]), tokens=tokens,
                               source_tokens=src_tok.pieces(texts[r]),
                               attention=att[b, :emitted, :length[b]])
  return results


def bleu(hypotheses: list[str], references: list[str], lowercase: bool) -> tuple:
  """(corpus BLEU, sacreBLEU signature) of detokenised hypotheses against references."""
  try:
    import sacrebleu  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError("BLEU needs sacrebleu: pip install sacrebleu") from None
  metric = sacrebleu.metrics.BLEU(lowercase=lowercase)
  score = metric.corpus_score(list(hypotheses), [list(references)])
  return float(score.score), str(metric.get_signature())


def evaluate(trainer, params, pair: tuple, *, batch_size: int, beam_size: int = 1,
             length_penalty: float = 1.0, max_decode_len: int = 0) -> dict:
  """Perplexity, token accuracy (teacher forcing) and BLEU (decoding) on parallel text."""
  src_tok, tgt_tok = translation.tokenizers(trainer.data)
  arrays = translation.encode_split(pair, src_tok, tgt_tok)
  metrics = trainer.evaluate(params, arrays, batch_size)
  outputs = translate(trainer.network, params, trainer.data, pair[0], beam_size=beam_size,
                      length_penalty=length_penalty, batch_size=batch_size,
                      max_decode_len=max_decode_len)
  score, signature = bleu([o.text for o in outputs], pair[1],
                          lowercase=trainer.data.info.get("lowercase", True))
  return {**metrics, "bleu": score, "bleu_signature": signature, "beam_size": beam_size,
          "sentences": len(pair[0])}


def plot_attention(translation_: Translation, path: str, title: str = "") -> str:
  """Heat map of one sentence's attention: target tokens down, source tokens across."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  att = np.asarray(translation_.attention)
  rows = (translation_.tokens + ["</s>"])[:att.shape[0]]
  cols = translation_.source_tokens[:att.shape[1]]
  fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(cols) + 2), max(3, 0.4 * len(rows) + 2)))
  ax.imshow(att, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
  ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right")
  ax.set_yticks(range(len(rows)), rows)
  ax.set_xlabel("source")
  ax.set_ylabel("output")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
