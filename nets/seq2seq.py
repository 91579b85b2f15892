"""Encoder-decoder with attention (`--model=seq2seq`): RNNsearch (Bahdanau et al. 2015).

Source embeddings -> a bidirectional recurrent encoder (GRU or LSTM cells of
nets.recurrent, `--num_layers`) whose top-layer states are the annotations h_j [B, S, 2H]
-> a recurrent decoder (same cell, `--decoder_size` units) started from
tanh(W [h_fwd_final; h_bwd_final] + b). At target step t the attention is queried with
the previous decoder state s_{t-1} (Bahdanau's order):

  additive (Bahdanau): e_tj = v^T tanh(W s_{t-1} + U h_j)
  general  (Luong):    e_tj = s_{t-1}^T W h_j
  dot      (Luong):    e_tj = s_{t-1}^T h_j      (needs 2 * hidden_size == decoder_size)

a_t = softmax over the valid source positions (padding gets exactly 0), c_t = sum a_tj h_j,
s_t = cell([E y_{t-1}; c_t], s_{t-1}), and the logits come from s_t, or with
`--deep_output` (default) from [s_t; c_t; E y_{t-1}] (Bahdanau's deep output without the
maxout). U h_j and every target embedding's share of the decoder's input projection are
computed once, outside the scan over target steps; the output layer is one matmul over
all steps.

Batches (nets.data.translation): "tokens" int32 [B, L, 2] with the source ids in [..., 0]
and the target ids followed by EOS in [..., 1] (stacked so the shared pipeline's length
buckets trim both), "src_length" and "tgt_length" [B]. Training is teacher forcing: the
decoder reads BOS followed by the target shifted right.

Decoding (`greedy`, `beam_search`) is one jit-compiled lax.scan over a fixed number of
steps with an end-of-sentence mask: after EOS a row emits PAD, so shapes never depend on
the data.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from nets import recurrent, rnn
from nets.config import option
from nets.errors import ConfigError
from nets.models import Network

TASK = "seq2seq"
DATA = "translation"
PAD, UNK, BOS, EOS = 0, 1, 2, 3  # ids shared by every translation vocabulary
ATTENTIONS = ("additive", "general", "dot")
CELLS = ("gru", "lstm")

# Multi30k on a CPU: Adam 1e-3 with clipping 1 and batch 128 as the PyTorch seq2seq
# tutorials; a cosine decay over the run instead of their fixed rate.
DEFAULTS = dict(dataset="multi30k", min_freq=2, optimizer="adam", learning_rate=1e-3,
                lr_schedule="cosine", batch_size=128, num_epochs=10, grad_clip=1.0,
                log_every=50)


@dataclasses.dataclass(frozen=True)
class Config:
  cell: str = option("gru", "Seq2seq: recurrent cell of the encoder and the decoder.",
                     choices=CELLS)
  embed_dim: int = option(256, "Embedding dimension (seq2seq: source and target).", low=1)
  hidden_size: int = option(512, "Recurrent models: units per layer (and direction).",
                            low=1)
  decoder_size: int = option(512, "Seq2seq: decoder units per layer.", low=1)
  attention: str = option(
      "additive", "Seq2seq attention scores, always queried with the previous decoder "
      "state: additive (Bahdanau), general or dot (Luong's score functions; dot needs "
      "2 * hidden_size == decoder_size).", choices=ATTENTIONS)
  attention_size: int = option(512, "Seq2seq: width of the additive attention's hidden "
                               "layer.", low=1)
  num_layers: int = rnn.same_option(rnn.Config, "num_layers")
  deep_output: bool = option(
      True, "Seq2seq: logits from [decoder state; context; previous target embedding] "
      "(Bahdanau's deep output) instead of the decoder state alone.")
  dropout: float = option(0.5, "Dropout rate (seq2seq: on embeddings, between layers and "
                          "before the output layer).", low=0.0, high=0.99)
  unroll: int = rnn.same_option(rnn.Config, "unroll")
  # Data (nets.data.translation).
  src_lang: str = option("de", "Translation: source language (multi30k: de or en; tfds: a "
                         "key of the dataset's translation feature).")
  tgt_lang: str = option("en", "Translation: target language (see --src_lang).")
  train_src_file: str = option("", "Translation: training source sentences, one per line "
                               "(plain or .gz); line i translates to line i of "
                               "--train_tgt_file. Overrides --dataset.")
  train_tgt_file: str = option("", "Translation: training target sentences, one per line.")
  valid_src_file: str = option("", "Translation: validation source sentences (default: "
                               "--valid_fraction of the training pairs).")
  valid_tgt_file: str = option("", "Translation: validation target sentences.")
  test_src_file: str = option("", "Translation: test source sentences (optional).")
  test_tgt_file: str = option("", "Translation: test target sentences.")
  subword_vocab_size: int = option(
      0, "Translation: 0 = the lower-casing word tokenizer (words kept if seen --min_freq "
      "times); N > 0 = sentencepiece unigram subwords, N pieces per language, trained on "
      "the training text (pip install 'nets[subword]').", low=0, high=1000000)


@dataclasses.dataclass(frozen=True)
class Seq2SeqNetwork(Network):
  """A Network plus the pieces decoding needs (all pure functions of params).

  apply(params, batch, train=, rng=) -> (logits [B, T, V], attention [B, T, S])
  encode(params, src_BxS, src_length_B) -> encoded dict (annotations, keys, mask, carry)
  greedy(params, src_BxS, src_length_B, steps) -> (tokens [B, steps], attention)
  beam_search(params, src_BxS, src_length_B, steps, beam_size, length_penalty)
      -> (tokens [B, steps], attention [B, steps, S], score [B])
  """

  encode: Callable = None
  greedy: Callable = None
  beam_search: Callable = None


def _dense(rng, fan_in: int, fan_out: int, bias: bool = True) -> dict:
  p = {"kernel": nn.initializers.lecun_normal()(rng, (fan_in, fan_out))}
  if bias:
    p["bias"] = jnp.zeros((fan_out,))
  return p


def _vocab_sizes(data_info) -> tuple[int, int]:
  info = data_info.info
  return info["src_vocab_size"], info["tgt_vocab_size"]


def build(config: Config, data_info) -> Seq2SeqNetwork:
  """The model over batches of the translation data kind (see the module docstring).

  data_info.info holds src_vocab_size and tgt_vocab_size.
  """
  cell = recurrent.CELLS[config.cell]
  V_src, V_tgt = _vocab_sizes(data_info)
  E, H, D, A = config.embed_dim, config.hidden_size, config.decoder_size, config.attention_size
  num_layers, C = config.num_layers, 2 * config.hidden_size  # C: annotation width
  K = len(cell.carry_keys)
  if config.attention == "dot" and C != D:
    raise ConfigError(f"--attention=dot needs 2 * --hidden_size == --decoder_size "
                      f"(got {C} and {D}): use additive or general attention")
  out_features = D + (C + E if config.deep_output else 0)

  def init(rng):
    r = jax.random.split(rng, 8)
    attention = {}
    if config.attention == "additive":
      attention = {"query": _dense(r[0], D, A), "key": _dense(r[1], C, A, bias=False),
                   "score": _dense(r[2], A, 1, bias=False)}
    elif config.attention == "general":
      attention = {"key": _dense(r[1], C, D, bias=False)}
    return {
        # N(0, 1) as nn.Embed and torch.nn.Embedding.
        "src_embed": {"embedding": jax.random.normal(r[3], (V_src, E))},
        "tgt_embed": {"embedding": jax.random.normal(r[4], (V_tgt, E))},
        "encoder": recurrent.init_stack(cell, r[5], E, H, num_layers, bidirectional=True),
        "bridge": _dense(r[6], C, num_layers * K * D),
        "attention": attention,
        "decoder": recurrent.init_stack(cell, r[7], E + C, D, num_layers),
        "output": _dense(jax.random.fold_in(rng, 1), out_features, V_tgt),
    }

  def encode(params, src_BxS, src_length_B, rng=None):
    """Annotations, attention keys (projected once), source mask, initial decoder carry."""
    src_length_B = jnp.maximum(src_length_B, 1)  # an empty source still attends somewhere
    embed_rng, stack_rng = jax.random.split(rng) if rng is not None else (None, None)
    x_BxSxE = jnp.take(params["src_embed"]["embedding"], src_BxS, axis=0)
    x_BxSxE = recurrent.dropout(x_BxSxE, config.dropout, embed_rng)
    carry, annotations_BxSxC = recurrent.run_stack(
        cell, params["encoder"], x_BxSxE, lengths_B=src_length_B,
        dropout_rate=config.dropout, rng=stack_rng, unroll=config.unroll)
    B = src_BxS.shape[0]
    s0 = jnp.tanh(recurrent.top_state(carry) @ params["bridge"]["kernel"]
                  + params["bridge"]["bias"]).reshape(B, num_layers, K, D)
    dec_carry = {recurrent.layer_name(l): {"forward": {k: s0[:, l, i]
                                                       for i, k in enumerate(cell.carry_keys)}}
                 for l in range(num_layers)}
    att = params["attention"]
    # U h_j (additive) or W h_j (general) once per sentence, not once per target step.
    keys_BxSxA = annotations_BxSxC @ att["key"]["kernel"] if "key" in att else annotations_BxSxC
    return {"annotations": annotations_BxSxC, "keys": keys_BxSxA,
            "mask": recurrent.length_mask(src_length_B, src_BxS.shape[1]),
            "carry": dec_carry}

  def attend(params, query_BxD, enc):
    """(attention weights [B, S], context [B, C])."""
    att = params["attention"]
    if config.attention == "additive":
      q_BxA = query_BxD @ att["query"]["kernel"] + att["query"]["bias"]
      scores_BxS = (jnp.tanh(enc["keys"] + q_BxA[:, None, :]) @ att["score"]["kernel"])[..., 0]
    else:
      scores_BxS = jnp.einsum("bsd,bd->bs", enc["keys"], query_BxD)
    scores_BxS = jnp.where(enc["mask"], scores_BxS, -jnp.inf)
    weights_BxS = jax.nn.softmax(scores_BxS, axis=-1)
    return weights_BxS, jnp.einsum("bs,bsc->bc", weights_BxS, enc["annotations"])

  def embed_targets(params, y_xT):
    """Target embeddings and their share of the decoder's first input projection."""
    e = jnp.take(params["tgt_embed"]["embedding"], y_xT, axis=0)
    first = params["decoder"][recurrent.layer_name(0)]["forward"]["input"]
    return e, e @ first["kernel"][:E] + first["bias"]

  def decoder_step(params, carry, ew_BxG, enc, keep=None):
    """One target step: (carry, (top state s_t, context c_t, attention a_t))."""
    query_BxD = carry[recurrent.layer_name(num_layers - 1)]["forward"]["h"]
    weights_BxS, context_BxC = attend(params, query_BxD, enc)
    new_carry, h = {}, None
    for l in range(num_layers):
      name = recurrent.layer_name(l)
      p = params["decoder"][name]["forward"]
      if l == 0:
        xw = ew_BxG + context_BxC @ p["input"]["kernel"][E:]
      else:
        if keep is not None:  # dropout between layers, a fresh mask every step
          h = jnp.where(keep[l - 1], h / (1.0 - config.dropout), 0.0)
        xw = recurrent.project_inputs(p, h)
      layer_carry, h = cell.recurrence(p, carry[name]["forward"], xw)
      new_carry[name] = {"forward": layer_carry}
    return new_carry, (h, context_BxC, weights_BxS)

  def output_logits(params, h_xD, context_xC, e_xE, rng=None):
    features = jnp.concatenate([h_xD, context_xC, e_xE], -1) if config.deep_output else h_xD
    features = recurrent.dropout(features, config.dropout, rng)
    return features @ params["output"]["kernel"] + params["output"]["bias"]

  def apply(params, batch, *, train: bool = False, rng=None):
    """Teacher forcing: (logits [B, T, V_tgt], attention weights [B, T, S])."""
    tokens = batch["tokens"]
    src_BxS, tgt_BxT = tokens[..., 0], tokens[..., 1]
    B, T = tgt_BxT.shape
    enc_rng, embed_rng, layer_rng, output_rng = (
        jax.random.split(rng, 4) if train else (None,) * 4)
    enc = encode(params, src_BxS, batch["src_length"], enc_rng)
    y_in_BxT = jnp.concatenate([jnp.full((B, 1), BOS, tgt_BxT.dtype), tgt_BxT[:, :-1]], 1)
    e_BxTxE, _ = embed_targets(params, y_in_BxT)
    e_BxTxE = recurrent.dropout(e_BxTxE, config.dropout, embed_rng)
    first = params["decoder"][recurrent.layer_name(0)]["forward"]["input"]
    ew_TxBxG = jnp.swapaxes(e_BxTxE @ first["kernel"][:E] + first["bias"], 0, 1)
    keep = None
    if layer_rng is not None and num_layers > 1 and config.dropout:
      keep = jax.random.bernoulli(layer_rng, 1.0 - config.dropout, (T, num_layers - 1, B, D))

    def step(carry, inputs):
      ew_BxG, keep_t = inputs
      return decoder_step(params, carry, ew_BxG, enc, keep_t)

    _, (h_TxBxD, context_TxBxC, weights_TxBxS) = jax.lax.scan(
        step, enc["carry"], (ew_TxBxG, keep), unroll=config.unroll)
    logits_BxTxV = output_logits(params, jnp.swapaxes(h_TxBxD, 0, 1),
                                 jnp.swapaxes(context_TxBxC, 0, 1), e_BxTxE, output_rng)
    return logits_BxTxV, jnp.swapaxes(weights_TxBxS, 0, 1)

  def next_log_probs(params, carry, y_prev_B, enc):
    """One decoding step from the previous tokens: (carry, log p [B, V], attention)."""
    e_BxE, ew_BxG = embed_targets(params, y_prev_B)
    carry, (h, context, weights) = decoder_step(params, carry, ew_BxG, enc)
    logits = output_logits(params, h, context, e_BxE)
    # PAD and BOS are never targets: decoding never emits them.
    logits = logits.at[:, PAD].set(-jnp.inf).at[:, BOS].set(-jnp.inf)
    return carry, jax.nn.log_softmax(logits, axis=-1), weights

  def greedy(params, src_BxS, src_length_B, steps: int):
    enc = encode(params, src_BxS, src_length_B)
    B = src_BxS.shape[0]

    def step(state, _):
      carry, y_prev, done = state
      carry, logp_BxV, weights = next_log_probs(params, carry, y_prev, enc)
      y = jnp.where(done, PAD, jnp.argmax(logp_BxV, axis=-1).astype(jnp.int32))
      return (carry, y, done | (y == EOS)), (y, weights)

    init = (enc["carry"], jnp.full((B,), BOS, jnp.int32), jnp.zeros((B,), bool))
    _, (y_TxB, weights_TxBxS) = jax.lax.scan(step, init, None, length=steps)
    return y_TxB.T, jnp.swapaxes(weights_TxBxS, 0, 1)

  def beam_search(params, src_BxS, src_length_B, steps: int, beam_size: int,
                  length_penalty: float = 1.0):
    """Beam search over `steps` steps; the result maximises log p(y) / |y|^length_penalty
    (|y| counts EOS; 0 gives the plain sum) among the finished and the `steps`-long
    hypotheses of the beam. Finished hypotheses stay in the beam, extended by PAD at no
    cost, so static shapes hold."""
    B, S = src_BxS.shape
    Kb = beam_size
    # Every beam of a sentence shares its encoding: rows [B*K, ...], sentence-major.
    enc = encode(params, jnp.repeat(src_BxS, Kb, 0), jnp.repeat(src_length_B, Kb, 0))
    V = V_tgt

    def gather(x_BKx, beam_BxK):
      x = x_BKx.reshape((B, Kb) + x_BKx.shape[1:])
      idx = beam_BxK.reshape((B, Kb) + (1,) * (x.ndim - 2))
      return jnp.take_along_axis(x, idx, axis=1).reshape(x_BKx.shape)

    def step(state, t):
      carry, y_prev, score_BxK, done_BxK, length_BxK, out_BxKxT, att_BxKxTxS = state
      carry, logp_BKxV, weights_BKxS = next_log_probs(params, carry, y_prev, enc)
      logp_BxKxV = logp_BKxV.reshape(B, Kb, V)
      # A finished hypothesis continues only with PAD, at no cost.
      finished_row = jnp.full((V,), -jnp.inf).at[PAD].set(0.0)
      logp_BxKxV = jnp.where(done_BxK[..., None], finished_row, logp_BxKxV)
      total_BxKV = (score_BxK[..., None] + logp_BxKxV).reshape(B, Kb * V)
      score_BxK, flat_BxK = jax.lax.top_k(total_BxKV, Kb)
      beam_BxK, y_BxK = flat_BxK // V, (flat_BxK % V).astype(jnp.int32)
      carry = jax.tree.map(lambda x: gather(x, beam_BxK), carry)
      done_BxK = jnp.take_along_axis(done_BxK, beam_BxK, 1)
      length_BxK = jnp.take_along_axis(length_BxK, beam_BxK, 1) + (~done_BxK)
      out_BxKxT = jnp.take_along_axis(out_BxKxT, beam_BxK[..., None], 1).at[:, :, t].set(y_BxK)
      att = jnp.take_along_axis(att_BxKxTxS, beam_BxK[..., None, None], 1)
      weights_BxKxS = jnp.take_along_axis(weights_BKxS.reshape(B, Kb, S),
                                          beam_BxK[..., None], 1)
      att_BxKxTxS = att.at[:, :, t].set(weights_BxKxS)
      done_BxK = done_BxK | (y_BxK == EOS)
      return (carry, y_BxK.reshape(-1), score_BxK, done_BxK, length_BxK, out_BxKxT,
              att_BxKxTxS), None

    # At the start all beams are the same hypothesis: only the first one may expand.
    score0 = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (Kb - 1)), (B, 1))
    init = (enc["carry"], jnp.full((B * Kb,), BOS, jnp.int32), score0,
            jnp.zeros((B, Kb), bool), jnp.zeros((B, Kb), jnp.int32),
            jnp.zeros((B, Kb, steps), jnp.int32), jnp.zeros((B, Kb, steps, S)))
    (_, _, score_BxK, _, length_BxK, out_BxKxT, att_BxKxTxS), _ = jax.lax.scan(
        step, init, jnp.arange(steps))
    normalised_BxK = score_BxK / jnp.maximum(length_BxK, 1).astype(jnp.float32) ** length_penalty
    best_B = jnp.argmax(normalised_BxK, axis=1)
    pick = lambda x: jnp.take_along_axis(
        x, best_B.reshape((B, 1) + (1,) * (x.ndim - 2)), 1)[:, 0]
    return pick(out_BxKxT), pick(att_BxKxTxS), pick(normalised_BxK)

  return Seq2SeqNetwork(init=init, apply=apply, encode=encode, greedy=greedy,
                        beam_search=beam_search)


@functools.partial(jax.jit, static_argnames=("network", "steps"))
def greedy_decode(network: Seq2SeqNetwork, params, src_BxS, src_length_B, steps: int):
  """Jit-compiled greedy decoding: (tokens [B, steps] with PAD after EOS, attention)."""
  return network.greedy(params, src_BxS, src_length_B, steps)


@functools.partial(jax.jit, static_argnames=("network", "steps", "beam_size"))
def beam_decode(network: Seq2SeqNetwork, params, src_BxS, src_length_B, steps: int,
                beam_size: int, length_penalty=1.0):
  """Jit-compiled beam search: (tokens [B, steps], attention [B, steps, S], score [B])."""
  return network.beam_search(params, src_BxS, src_length_B, steps, beam_size,
                             length_penalty)


def check(cfg) -> None:
  """Cross-flag rules of the seq2seq family."""
  mc = cfg.model_config
  if cfg.cv_folds:
    raise ConfigError(f"--cv_folds={cfg.cv_folds}: translation trains on one split; pass "
                      "--cv_folds=0")
  if cfg.loss != "softmax_xent":
    raise ConfigError(f"--loss={cfg.loss}: seq2seq uses softmax_xent (token cross-entropy)")
  if mc.attention == "dot" and 2 * mc.hidden_size != mc.decoder_size:
    raise ConfigError(f"--attention=dot needs 2 * --hidden_size == --decoder_size (got "
                      f"{2 * mc.hidden_size} and {mc.decoder_size}): use additive or general")
  if (cfg.vmap_seeds or cfg.vmap_learning_rates) and cfg.bucket_by_length:
    raise ConfigError("seq2seq replicas (--vmap_*) need --bucket_by_length=false (replica "
                      "batches must share one padded length)")
  for side in ("train", "valid", "test"):
    src, tgt = getattr(mc, f"{side}_src_file"), getattr(mc, f"{side}_tgt_file")
    if bool(src) != bool(tgt):
      raise ConfigError(f"--{side}_src_file and --{side}_tgt_file go together: pass both")
  if mc.src_lang == mc.tgt_lang:
    raise ConfigError(f"--src_lang and --tgt_lang are both {mc.src_lang}: translate between "
                      "two languages")
