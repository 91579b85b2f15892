"""An image ConvNet; by default the LeNet-style network of the lectures' Torch example.

Input 1x32x32 (MNIST's 28x28 zero-padded by 2) -> conv 5x5, 16 maps -> tanh -> max-pool
2x2 stride 2 -> conv 5x5, 128 maps -> tanh -> max-pool 2x2 stride 2 -> dense 200 -> tanh
-> dense 10 (logits; the loss applies the log-softmax). Shapes: 32 -> 28 -> 14 -> 10 -> 5,
so the first dense layer sees 5*5*128 = 3200 features.

Flags set the blocks (`--channels`, `--convs_per_block`), the convolutions (kernel,
stride, padding valid/same/P), activations, pooling and the dense head, so a small
VGG-style stack needs no code, e.g. for CIFAR-10:
  --channels=64,128,256 --convs_per_block=2 --kernel_size=3 --conv_padding=same
  --conv_activation=relu --dense_widths=256 --dense_dropout=0.5 --input_padding=0
  --random_crop=4 --random_flip

Images arrive as uint8 NHWC and are padded, augmented (training only), scaled and
normalized on the device (`preprocess`), so the host keeps uint8 and a resumed run
draws the same augmentation from the step's rng.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nets.config import option
from nets.errors import ConfigError
from nets.models import Network

TASK = "classification"
DATA = "image"

# SGD with momentum 0.9 and a cosine decay, as flax's MNIST example (which reaches 99.17
# with a similar network in 10 epochs); validation = MNIST's last 5000 training images.
DEFAULTS = dict(dataset="mnist", optimizer="momentum", learning_rate=0.05, batch_size=128,
                num_epochs=10, lr_schedule="cosine", max_norm=0.0, valid_fraction=1 / 12)

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "sigmoid": nn.sigmoid}
NORMALIZATIONS = ("channel", "global", "none")


@dataclasses.dataclass(frozen=True)
class Config:
  channels: tuple = option(
      (16, 128), "Feature maps of each conv block, comma-separated: one block (conv(s), "
      "activation, pooling) per entry.", low=1)
  convs_per_block: int = option(
      1, "Convolutions (each followed by the activation) per block before its pooling; 2 "
      "or 3 for VGG-style blocks.", low=1)
  kernel_size: int = option(5, "Height and width of every convolution filter.", low=1)
  conv_stride: int = option(1, "Stride of every convolution.", low=1)
  conv_impl: str = option(
      "auto", "How convolutions are computed: xla (XLA's convolution), patches (one matmul "
      "over the input's kh*kw*C patches; kh*kw times the memory), mixed (XLA's "
      "convolution and kernel gradient, the input gradient as one matmul to the patches' "
      "gradient), blocks (stride 1: one matmul from each (kh+1)x(kw+1) input block to a "
      "2x2 block of outputs), auto (on the CPU at stride 1: blocks for one input channel, "
      "mixed for kernels of 5x5 or more with at least 4x as many output as input "
      "channels; else xla). Same parameters either way.",
      choices=("auto", "xla", "patches", "mixed", "blocks"))
  conv_padding: str = option(
      "valid", "Zero padding of every convolution: valid (none: W-F+1 outputs), same "
      "(ceil(W/S) outputs) or an integer P on each side ((W-F+2P)/S+1 outputs).")
  conv_activation: str = option("tanh", "Nonlinearity after every convolution.",
                                choices=tuple(ACTIVATIONS))
  pool_type: str = option("max", "Pooling after each conv block (none: no pooling).",
                          choices=("max", "avg", "none"))
  pool_size: int = option(2, "Pooling window height and width.", low=1)
  pool_stride: int = option(
      2, "Pooling stride (equal to --pool_size: non-overlapping windows).", low=1)
  dense_widths: tuple = option(
      (200,), "Widths of the hidden dense layers after the conv blocks, comma-separated "
      "(empty: the output layer follows the last block).", low=1)
  dense_activation: str = option("tanh", "Nonlinearity after every hidden dense layer.",
                                 choices=tuple(ACTIVATIONS))
  dense_dropout: float = option(
      0.0, "Dropout rate on the input of every dense layer (training only).", low=0.0,
      high=0.99)
  input_padding: int = option(
      2, "Zero (background) pixels added on every side of each image first: 2 turns "
      "MNIST's 28x28 into LeNet's 32x32; use 0 for CIFAR-10.", low=0)
  pixel_scale: float = option(
      1 / 255, "Multiply uint8 pixels by this (default: to [0, 1]); applied on the device.",
      gt=0.0)
  normalize: str = option(
      "channel", "Then subtract the training images' pixel mean and divide by their std: "
      "per channel, over all channels (global), or not (none).", choices=NORMALIZATIONS)
  random_crop: int = option(
      0, "Training augmentation: pad each image by this many zero pixels and crop it back "
      "at a random offset (4 is usual for CIFAR-10; 0: off).", low=0)
  random_flip: bool = option(
      False, "Training augmentation: flip each image left-right with probability 1/2 (not "
      "for digits).")


# --- layers (plain functions / module factories, shared with the gradient tests) ----------

def conv_padding(padding: str):
  """The --conv_padding string as flax padding: 'VALID', 'SAME' or ((P, P), (P, P))."""
  if padding in ("valid", "same"):
    return padding.upper()
  p = int(padding)
  return ((p, p), (p, p))


def conv_layer(features: int, config: Config, name: str | None = None) -> nn.Module:
  return Conv(features, (config.kernel_size, config.kernel_size),
              strides=(config.conv_stride, config.conv_stride),
              padding=conv_padding(config.conv_padding), impl=config.conv_impl, name=name)


# Where "auto" uses `mixed` (CPU, stride 1): kernels of at least this many taps, with at
# least WIDE_MIN_WIDENING times as many output as input channels. Forward and both
# gradients, batch 128, XLA vs patches (ms), faster as patches: 5x5x16->128 on 14x14
# (LeNet) 38-41 vs 33-35, 5x5x8->64 on 14x14 19-22 vs 12-13, 5x5x32->256 on 12x12 80 vs 73;
# slower or even: every 3x3 kernel tried (16->32, 32->64, 32->128, 8->64, 16->128, 64->64,
# 128->128, 256->256; e.g. 64->64 on 32x32 same: 189-191 vs 281-288) and 5x5x32->64 on
# 16x16 same (64 vs 101). Then `mixed` (XLA's forward and kernel gradient were the faster
# ones, its input gradient the slow one), xla / patches / mixed, medians of 5: LeNet's
# 36.1 / 27.0 / 23.2 and 33.8 / 27.5 / 22.9, 5x5x8->64 17.0 / 11.3 / 9.0, 5x5x32->256
# 74.6 / 52.3 / 43.9, 5x5x32->64 same 56.5 / 77.5 / 55.2; 3x3 still XLA's: 64->64 on 32x32
# 136 / 244 / 170, 128->128 on 16x16 120 / 177 / 142, 256->256 on 8x8 115 / 141 / 124.
WIDE_MIN_TAPS = 25
WIDE_MIN_WIDENING = 4
# Outputs per side of one `blocks` matmul row: 2x2 (LeNet's first layer alone, forward and
# kernel gradient: XLA 7.6-8.5 ms, blocks of 2 4.0-5.3, of 4 4.5-5.6, of 7 9.1-10.4).
OUTPUT_BLOCK = 2
# "auto" uses `blocks` for single-channel inputs only. Forward + kernel gradient, batch 128,
# XLA vs blocks (ms): 5x5x1->16 on 32x32 9-10 vs 4.7, 3x3x1->32 on 28x28 5-7 vs 4.9; but
# 3x3x3->64 on 32x32 15.0 vs 18.7 and 5x5x3->32 14.6-16.3 vs 18.1-19.7.
BLOCKS_MAX_CHANNELS = 1


class Conv(nn.Module):
  """nn.Conv's function and parameters (kernel [kh, kw, C, F], bias [F]), computed by XLA's
  convolution or by a matmul (`--conv_impl`).

  On the CPU the matmuls go to YNNPACK's dot, faster than XLA's convolution for both of
  LeNet's layers (not for most others: see WIDE_MIN_TAPS). Its second layer's input
  gradient is one matmul to its 5x5x16 patches' gradient, summed back into place, while
  XLA's convolution computes its forward and kernel gradient (`mixed`: step ~60 -> ~50
  ms; all of it over patches had been ~52 -> ~47 against XLA alone). Its first layer's
  25-long patches made a slow skinny matmul (49 ms with both as patches), so it goes as
  `blocks`: a (kh+1)x(kw+1) input block against an expanded kernel gives a 2x2 block of
  outputs, [B*Ho*Wo/4, 36] x [36, 4*16] for LeNet, 1.4x the multiply-adds of the
  convolution in a shape a matmul runs well (for one input channel; with three, XLA's
  convolution was faster). Both hold copies of the input, so "auto" uses them on the CPU
  only."""

  features: int
  kernel_size: tuple
  strides: tuple = (1, 1)
  padding: str | tuple = "VALID"
  impl: str = "auto"

  @nn.compact
  def __call__(self, x_BxHxWxC):
    kh, kw = self.kernel_size
    C = x_BxHxWxC.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, C, self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    pads = (jax.lax.padtype_to_pads(x_BxHxWxC.shape[1:3], self.kernel_size, self.strides,
                                    self.padding)
            if isinstance(self.padding, str) else self.padding)
    impl = self.impl
    if impl == "auto":
      impl = "xla"
      if jax.default_backend() == "cpu" and self.strides == (1, 1):
        if C <= BLOCKS_MAX_CHANNELS:
          impl = "blocks"
        elif kh * kw >= WIDE_MIN_TAPS and self.features >= WIDE_MIN_WIDENING * C:
          impl = "mixed"
    if impl == "blocks" and self.strides != (1, 1):
      raise ValueError("conv_impl='blocks' is for stride 1")
    if impl == "xla":
      return _xla_conv(x_BxHxWxC, kernel, self.strides, pads) + bias
    if impl == "mixed":
      return _mixed_conv(x_BxHxWxC, kernel, self.strides, tuple(map(tuple, pads))) + bias
    if impl == "blocks":
      return _blocks_conv(x_BxHxWxC, kernel, pads, OUTPUT_BLOCK) + bias
    cols = _patches(x_BxHxWxC, (kh, kw), self.strides, pads)
    return cols @ kernel.reshape(kh * kw * C, self.features) + bias


def _xla_conv(x_BxHxWxC, kernel, strides, pads):
  return jax.lax.conv_general_dilated(x_BxHxWxC, kernel, strides, pads,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _patches(x_BxHxWxC, kernel_size, strides, pads):
  """[B, Ho, Wo, kh*kw*C]: every output position's input patch (im2col)."""
  (kh, kw), (sh, sw) = kernel_size, strides
  x = jnp.pad(x_BxHxWxC, ((0, 0), *pads, (0, 0)))
  Ho, Wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  return jnp.concatenate([x[:, i:i + sh * (Ho - 1) + 1:sh, j:j + sw * (Wo - 1) + 1:sw]
                          for i in range(kh) for j in range(kw)], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _mixed_conv(x_BxHxWxC, kernel, strides, pads):
  """XLA's convolution, and its kernel gradient; the input gradient as one matmul to the
  patches' cotangent, then summed back into place (the VJP of `_patches`), where XLA:CPU's
  transposed convolution was the slow part."""
  return _xla_conv(x_BxHxWxC, kernel, strides, pads)


def _mixed_conv_fwd(x_BxHxWxC, kernel, strides, pads):
  return _xla_conv(x_BxHxWxC, kernel, strides, pads), (x_BxHxWxC, kernel)


def _mixed_conv_bwd(strides, pads, residuals, dy_BxHoxWoxF):
  x, kernel = residuals
  kh, kw, C, F = kernel.shape
  d_kernel = jax.vjp(lambda k: _xla_conv(x, k, strides, pads), kernel)[1](dy_BxHoxWoxF)[0]
  d_cols = dy_BxHoxWoxF @ kernel.reshape(kh * kw * C, F).T
  dx = jax.vjp(lambda x: _patches(x, (kh, kw), strides, pads), x)[1](d_cols)[0]
  return dx, d_kernel


_mixed_conv.defvjp(_mixed_conv_fwd, _mixed_conv_bwd)


def _blocks_conv(x_BxHxWxC, kernel, pads, s: int):
  """A stride-1 convolution with padding `pads` ((top, bottom), (left, right)) computed
  s x s outputs at a time: each (kh+s-1) x (kw+s-1) input block times the kernel placed at
  the s*s output offsets of the block."""
  B, H, W, C = x_BxHxWxC.shape
  kh, kw, _, F = kernel.shape
  (top, bottom), (left, right) = pads
  H, W = H + top + bottom, W + left + right
  Ho, Wo = H - kh + 1, W - kw + 1
  nh, nw = -(-Ho // s), -(-Wo // s)  # output blocks; the last ones may overhang
  bh, bw = kh + s - 1, kw + s - 1
  # one pad: the convolution's own, plus zeros under the overhanging blocks
  x = jnp.pad(x_BxHxWxC, ((0, 0), (top, bottom + nh * s + kh - 1 - H),
                          (left, right + nw * s + kw - 1 - W), (0, 0)))
  rows = jnp.stack([x[:, i:i + s * (nh - 1) + 1:s] for i in range(bh)], axis=2)
  blocks = jnp.stack([rows[:, :, :, j:j + s * (nw - 1) + 1:s] for j in range(bw)], axis=4)
  blocks = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, bh * bw * C)
  # expanded[u, v, c, p, q, f] = kernel[u - p, v - q, c, f] where that index is inside
  expanded = jnp.stack([jnp.stack([
      jnp.pad(kernel, ((p, s - 1 - p), (q, s - 1 - q), (0, 0), (0, 0))) for q in range(s)],
      axis=-2) for p in range(s)], axis=-3)
  y = blocks @ expanded.reshape(bh * bw * C, s * s * F)
  y = y.reshape(B, nh, nw, s, s, F).transpose(0, 1, 3, 2, 4, 5).reshape(B, nh * s, nw * s, F)
  return y[:, :Ho, :Wo]


def pool(x_BxHxWxC, kind: str, window: int, stride: int):
  if kind == "none":
    return x_BxHxWxC
  if window == stride:
    # Non-overlapping windows as a reshape and a reduction: its gradient is elementwise,
    # while reduce_window's (select-and-scatter) costs XLA:CPU ~5x as much (LeNet step:
    # ~100 of 138 ms). Ties in a max window share the gradient instead of one taking it.
    B, H, W, C = x_BxHxWxC.shape
    Ho, Wo = H // window, W // window
    x = x_BxHxWxC[:, :Ho * window, :Wo * window].reshape(B, Ho, window, Wo, window, C)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))
  fn = nn.max_pool if kind == "max" else nn.avg_pool
  return fn(x_BxHxWxC, (window, window), strides=(stride, stride), padding="VALID")


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
  """Outputs of a convolution along one axis: (W - F + 2P) / S + 1, rounded down."""
  if padding == "same":
    return -(-size // stride)
  p = 0 if padding == "valid" else int(padding)
  return (size - kernel + 2 * p) // stride + 1


def pool_output_size(size: int, window: int, stride: int) -> int:
  return (size - window) // stride + 1


def feature_shapes(config: Config, image_shape) -> list[tuple[str, tuple]]:
  """(layer, (H, W, C)) after the input padding and after every conv and pooling layer."""
  H, W, C = image_shape
  H, W = H + 2 * config.input_padding, W + 2 * config.input_padding
  shapes = [("input", (H, W, C))]
  for block, features in enumerate(config.channels):
    for i in range(config.convs_per_block):
      H, W = (conv_output_size(s, config.kernel_size, config.conv_stride,
                               config.conv_padding) for s in (H, W))
      shapes.append((f"conv{block * config.convs_per_block + i}", (H, W, features)))
    if config.pool_type != "none":
      H, W = (pool_output_size(s, config.pool_size, config.pool_stride) for s in (H, W))
      shapes.append((f"pool{block}", (H, W, features)))
  return shapes


class ConvNet(nn.Module):
  """Conv blocks and a dense head over preprocessed float images [B, H, W, C]."""

  config: Config
  num_outputs: int

  @nn.compact
  def __call__(self, x_BxHxWxC, *, train: bool):
    cfg = self.config
    x = x_BxHxWxC
    for block, features in enumerate(cfg.channels):
      for i in range(cfg.convs_per_block):
        conv = conv_layer(features, cfg, name=f"conv{block * cfg.convs_per_block + i}")
        x = ACTIVATIONS[cfg.conv_activation](conv(x))
      x = pool(x, cfg.pool_type, cfg.pool_size, cfg.pool_stride)
    x = x.reshape((x.shape[0], -1))
    for j, width in enumerate(cfg.dense_widths):
      x = nn.Dropout(cfg.dense_dropout, deterministic=not train)(x)
      x = ACTIVATIONS[cfg.dense_activation](nn.Dense(width, name=f"dense{j}")(x))
    x = nn.Dropout(cfg.dense_dropout, deterministic=not train)(x)
    return nn.Dense(self.num_outputs, name="output")(x)


# --- input pipeline on the device ---------------------------------------------------------

def augment(images_BxHxWxC, rng, crop_padding: int, flip: bool):
  """Random crop after zero padding, and random left-right flip, one draw per image."""
  B, H, W, C = images_BxHxWxC.shape
  crop_rng, flip_rng = jax.random.split(rng)
  x = images_BxHxWxC
  if crop_padding:
    p = crop_padding
    padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets_Bx2 = jax.random.randint(crop_rng, (B, 2), 0, 2 * p + 1)
    crop = lambda image, o: jax.lax.dynamic_slice(image, (o[0], o[1], 0), (H, W, C))
    x = jax.vmap(crop)(padded, offsets_Bx2)
  if flip:
    flip_B = jax.random.bernoulli(flip_rng, 0.5, (B,))
    x = jnp.where(flip_B[:, None, None, None], x[:, :, ::-1, :], x)
  return x


def preprocess(images_BxHxWxC, config: Config, stats: dict, *, train: bool = False,
               rng=None):
  """uint8 images -> the float network input: pad, augment (training), scale, normalize.

  Padding and augmentation add zero pixels before normalization, so they look like
  background (MNIST's 0) rather than like the mean.
  """
  x = images_BxHxWxC.astype(jnp.float32)
  p = config.input_padding
  if p:
    x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  if train and rng is not None and (config.random_crop or config.random_flip):
    x = augment(x, rng, config.random_crop, config.random_flip)
  x = x * config.pixel_scale
  if config.normalize != "none":
    if config.normalize == "channel":
      mean, std = np.asarray(stats["pixel_mean"]), np.asarray(stats["pixel_std"])
    else:
      mean, std = np.asarray(stats["pixel_mean_global"]), np.asarray(stats["pixel_std_global"])
    mean = jnp.asarray(mean * config.pixel_scale, jnp.float32)
    std = jnp.asarray(np.maximum(std, 1e-6) * config.pixel_scale, jnp.float32)
    x = (x - mean) / std
  return x


def build(config: Config, data_info) -> Network:
  """The ConvNet as (init, apply) over batches {"image": uint8 [B, H, W, C]}.

  data_info needs .num_outputs and .info with "image_shape" and the pixel statistics
  of nets.data.images.pixel_stats (saved in data.json, so evaluation rebuilds the same).
  """
  image_shape = tuple(data_info.info["image_shape"])
  shapes = feature_shapes(config, image_shape)
  for layer, (H, W, _) in shapes:
    if H < 1 or W < 1:
      raise ConfigError(
          f"{'x'.join(map(str, image_shape[:2]))} images shrink to {H}x{W} at {layer} "
          f"({', '.join(f'{n} {h}x{w}' for n, (h, w, _) in shapes)}): use fewer "
          "--channels blocks, --conv_padding=same, a smaller --kernel_size or pooling")
  module = ConvNet(config, data_info.num_outputs)
  stats = {k: v for k, v in data_info.info.items() if k.startswith("pixel_")}

  def init(rng):
    H, W, C = shapes[0][1]
    return module.init({"params": rng}, jnp.zeros((1, H, W, C), jnp.float32),
                       train=False)["params"]

  def apply(params, batch, *, train: bool = False, rng=None):
    rngs = {}
    augment_rng = None
    if train and rng is not None:
      augment_rng, dropout_rng = jax.random.split(rng)
      rngs = {"dropout": dropout_rng}
    x = preprocess(batch["image"], config, stats, train=train, rng=augment_rng)
    return module.apply({"params": params}, x, train=train, rngs=rngs)

  return Network(init=init, apply=apply)


def check(cfg) -> None:
  """Cross-flag rules of this family (single-field ranges are in the field metadata)."""
  mc = cfg.model_config
  padding = mc.conv_padding
  if padding not in ("valid", "same") and not padding.isdigit():
    raise ConfigError(f"--conv_padding={padding}: must be valid, same or a non-negative "
                      "integer")
  if mc.conv_impl == "blocks" and mc.conv_stride != 1:
    raise ConfigError(f"--conv_impl=blocks computes stride-1 convolutions only "
                      f"(--conv_stride={mc.conv_stride}): use --conv_impl=auto, xla, "
                      "patches or mixed")
