"""The sentence CNN of Kim (2014), "Convolutional Neural Networks for Sentence Classification".

Embeddings -> parallel 1-D convolutions of several widths -> activation -> pooling over
time -> dropout -> dense output. Embedding modes follow the paper: `rand` (random,
trained), `static` (pretrained, frozen), `non-static` (pretrained, fine-tuned) and
`multichannel` (a frozen and a fine-tuned copy; every filter sees both channels and
their responses add up).

Convolution follows the lectures' definitions: a `narrow` convolution of width w over
n tokens has n - w + 1 outputs; a `wide` one pads w - 1 zeros on each side and has
n + w - 1. Padding positions are zero vectors (as in Kim's code) and pooling only sees
positions that overlap the sentence, so a batch's padding never changes a sentence's
output. A sentence shorter than a narrow filter still gets one window (the sentence
followed by zeros).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nets.config import option
from nets.models import Network

TASK = "classification"
DATA = "text"
# Embedding modules looked up by batch["tokens"]: eligible for row-sparse updates.
TOKEN_TABLES = ("embed", "frozen_embed")
EMBEDDING_MODES = ("rand", "static", "non-static", "multichannel")
PAD = 0

# Kim (2014): Adadelta (rho 0.95), batch 50, dropout 0.5, max-norm 3, 25 epochs, and his
# code's selection (a validation tie goes to the later epoch). Not Kim's: words seen once
# map to <unk>, so <unk> is trained (chosen on TREC validation).
DEFAULTS = dict(optimizer="adadelta", learning_rate=1.0, batch_size=50, num_epochs=25,
                max_norm=3.0, min_freq=2, best_on_tie="later")


@dataclasses.dataclass(frozen=True)
class Config:
  embed_dim: int = option(300, "Word embedding size (must match --embeddings if given).",
                          low=1)
  embedding_mode: str = option(
      "rand", "rand: random trained embeddings; static / non-static / multichannel need "
      "--embeddings (frozen / fine-tuned / both as two channels).", choices=EMBEDDING_MODES)
  embeddings: str = option(
      "", "Pretrained word vectors: word2vec .bin/.txt or GloVe .txt (optionally .gz).")
  embeddings_format: str = option(
      "auto", "Format of --embeddings.",
      choices=("auto", "word2vec_bin", "word2vec_txt", "glove"))
  filter_widths: tuple = option((3, 4, 5), "Convolution filter widths (comma-separated).",
                                low=1)
  num_filters: int = option(100, "Feature maps per filter width.", low=1)
  conv: str = option("wide", "narrow: n-w+1 outputs; wide: n+w-1 (zero-padded).",
                     choices=("narrow", "wide"))
  activation: str = option("relu", "Nonlinearity after the convolution.",
                           choices=("relu", "tanh"))
  pooling: str = option("max", "Pooling over time.", choices=("max", "avg"))
  pool_padding: bool = option(
      False, "Max pooling also sees a window of pure padding, whose output is act(bias): "
      "as Kim's Theano code, which pads every sentence to the dataset's longest and pools "
      "over all of it. The same for any batch padding, unlike pooling over a batch's pad.")
  dropout: float = option(0.5, "Dropout rate on the penultimate layer.", low=0.0,
                          high=0.99)
  dropout_scaling: str = option(
      "train", "train: kept features are scaled by 1/(1-p) in training (inverted dropout, "
      "flax's). test: they are not, and all features are scaled by 1-p at test, as in Kim "
      "and Hinton et al. (2012); --max_norm then bounds the training-time weights, as Kim's.",
      choices=("train", "test"))
  weight_init: str = option(
      "kim", "Weight init. kim: Kim's Theano code (convolution kernels U[-0.01, 0.01] "
      "for relu; Glorot uniform for tanh, whose fan-out his code also divides by the "
      "pooling length; output weights zero); lecun: flax's LeCun normal.",
      choices=("kim", "lecun"))


def _uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def conv_output_length(n: int, width: int, conv: str) -> int:
  """Number of valid outputs of a convolution of `width` over `n` tokens."""
  return n + width - 1 if conv == "wide" else max(n - width + 1, 1)


class TextCNN(nn.Module):
  """Convolutions, pooling and output over already-embedded sentences [B, L, C]."""

  config: Config
  num_outputs: int

  @nn.compact
  def __call__(self, x_BxLxC, length_B, *, train: bool):
    cfg = self.config
    L = x_BxLxC.shape[1]
    positions = jnp.arange(L + max(cfg.filter_widths) - 1)
    act = {"relu": nn.relu, "tanh": jnp.tanh}[cfg.activation]
    if cfg.weight_init == "kim":
      output_init = nn.initializers.zeros
      conv_init = _uniform(0.01) if cfg.activation == "relu" else nn.initializers.glorot_uniform()
    else:
      conv_init = output_init = nn.initializers.lecun_normal()
    pooled = []
    for w in cfg.filter_widths:
      pad = (w - 1, w - 1) if cfg.conv == "wide" else (0, max(w - L, 0))
      xw = jnp.pad(x_BxLxC, ((0, 0), pad, (0, 0)))
      h_BxTxF = act(nn.Conv(cfg.num_filters, (w,), padding="VALID", kernel_init=conv_init,
                            name=f"conv{w}")(xw))
      T = h_BxTxF.shape[1]
      valid_BxT = positions[None, :T] < _valid_outputs(length_B, w, cfg.conv)[:, None]
      pooled_BxF = _pool(h_BxTxF, valid_BxT, cfg.pooling)
      if cfg.pool_padding:  # a window of zero vectors: act(0 * W + b)
        pooled_BxF = jnp.maximum(pooled_BxF, act(self.variables["params"][f"conv{w}"]["bias"]))
      pooled.append(pooled_BxF)
    z = jnp.concatenate(pooled, axis=-1)
    z = nn.Dropout(cfg.dropout, deterministic=not train)(z)
    if cfg.dropout_scaling == "test":  # undoes flax's 1/(1-p) in training; 1-p at test
      z = z * (1.0 - cfg.dropout)
    return nn.Dense(self.num_outputs, kernel_init=output_init, name="output")(z)


def embed(params, tokens_BxL):
  """Looks tokens up in every embedding table (a frozen one under stop_gradient).

  Two channels side by side: a filter over 2*D features is one filter per channel,
  summed, which is Kim's multichannel rule. PAD positions are zero vectors, as in Kim.
  """
  channels = []
  if "embed" in params:
    channels.append(jnp.take(params["embed"]["embedding"], tokens_BxL, axis=0))
  if "frozen_embed" in params:
    channels.append(jax.lax.stop_gradient(
        jnp.take(params["frozen_embed"]["embedding"], tokens_BxL, axis=0)))
  x = jnp.concatenate(channels, axis=-1)
  return x * (tokens_BxL != PAD)[..., None].astype(x.dtype)


def embedding_tables(config: Config) -> tuple:
  return {"rand": ("embed",), "non-static": ("embed",), "static": ("frozen_embed",),
          "multichannel": ("embed", "frozen_embed")}[config.embedding_mode]


def _valid_outputs(length_B, width: int, conv: str):
  if conv == "wide":
    return jnp.maximum(length_B, 1) + width - 1
  return jnp.maximum(length_B - width + 1, 1)


def _pool(h_BxTxF, valid_BxT, kind: str):
  valid = valid_BxT[..., None]
  if kind == "max":
    return jnp.max(jnp.where(valid, h_BxTxF, -jnp.inf), axis=1)
  count = jnp.maximum(valid.sum(axis=1), 1)
  return jnp.sum(jnp.where(valid, h_BxTxF, 0.0), axis=1) / count


def build(config: Config, data_info) -> Network:
  """The sentence CNN as (init, apply) over batches {"tokens", "length"}.

  data_info needs .vocab_size, .num_outputs and, for pretrained modes, .pretrained
  (a [vocab_size, embed_dim] array) — see nets.data.datasets.
  """
  module = TextCNN(config, data_info.num_outputs)
  pretrained = getattr(data_info, "pretrained", None)
  if config.embedding_mode != "rand" and pretrained is None:
    raise ValueError("pretrained embedding modes need data_info.pretrained")
  tables = embedding_tables(config)
  channels = len(tables) * config.embed_dim

  def init(rng):
    embed_rng, rng = jax.random.split(rng)
    x = jnp.zeros((1, max(config.filter_widths), channels), jnp.float32)
    params = dict(module.init({"params": rng}, x, jnp.ones((1,), jnp.int32),
                              train=False)["params"])
    if pretrained is not None:
      table = jnp.asarray(pretrained, jnp.float32)
    else:  # Kim's CNN-rand: U[-0.25, 0.25]
      table = jax.random.uniform(embed_rng, (data_info.vocab_size, config.embed_dim),
                                 jnp.float32, -0.25, 0.25)
    for name in tables:  # own buffers: the train step donates (and updates) each one
      params[name] = {"embedding": jnp.array(table, copy=True)}
    return params

  def apply(params, batch, *, train: bool = False, rng=None):
    rngs = {"dropout": rng} if train else {}
    module_params = {k: v for k, v in params.items() if k not in TOKEN_TABLES}
    return module.apply({"params": module_params}, embed(params, batch["tokens"]),
                        batch["length"], train=train, rngs=rngs)

  return Network(init=init, apply=apply)


def check(cfg) -> None:
  """Cross-flag rules of this family (single-field ranges are in the field metadata)."""
  from nets.errors import ConfigError
  mc = cfg.model_config
  if mc.embedding_mode != "rand" and not mc.embeddings:
    raise ConfigError(f"--embedding_mode={mc.embedding_mode} needs --embeddings=PATH "
                      "(word2vec .bin/.txt or GloVe .txt), or use --embedding_mode=rand")
  if mc.pool_padding and mc.pooling != "max":
    raise ConfigError(f"--pool_padding applies to max pooling: pass --pooling=max or "
                      f"--pool_padding=false (got --pooling={mc.pooling})")
  if mc.embeddings and mc.embedding_mode == "rand":
    raise ConfigError("--embeddings is given but --embedding_mode=rand ignores it: pass "
                      "--embedding_mode=static, non-static or multichannel")
