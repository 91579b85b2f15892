"""The image ConvNet: shapes, the output-size formula, the lectures' gradients, training.

The gradient checks write the lectures' closed forms as plain numpy functions (float64)
and compare them with jax.grad of the model's own layers and with finite differences:
  conv filter gradient = "reverse convolution": valid cross-correlation of the layer's
                         input with the output error;
  conv input gradient  = "full convolution" of the error with the flipped filter;
  max-pool gradient    = the error routed to each window's arg-max only;
  softmax-CE gradient  = y_hat - y;        sigmoid derivative = s (1 - s).
"""

import json
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import convnet, losses
from nets.config import Config
from nets.data import datasets, images
from nets.errors import ConfigError
from nets.trainer import Trainer, train_and_evaluate
from tests.conftest import REPO, cli_env, assert_every_param_changed


# --- fixtures -----------------------------------------------------------------------------

def tiny_convnet(**kw):
  base = dict(channels=(2, 3), kernel_size=3, dense_widths=(5,), input_padding=0)
  base.update(kw)
  return convnet.Config(**base)


def data_info(image_shape=(14, 14, 1), num_outputs=4, mean=0.0, std=1.0):
  C = image_shape[-1]
  return types.SimpleNamespace(num_outputs=num_outputs, info={
      "image_shape": list(image_shape), "pixel_mean": [mean] * C, "pixel_std": [std] * C,
      "pixel_mean_global": mean, "pixel_std_global": std})


def random_images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def write_synthetic_mnist(root, n_train=120, n_test=40, size=12, seed=0):
  """MNIST-layout IDX .gz files of 3 learnable classes: a bright block at one of 3 places."""
  rng = np.random.default_rng(seed)
  (root / "mnist").mkdir(parents=True, exist_ok=True)

  def make(n):
    labels = rng.integers(0, 3, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, label in enumerate(labels):
      r = 1 + 3 * int(label)
      x[i, r:r + 3, 2:size - 2] = 255
    return x, labels

  for prefix, n in (("train", n_train), ("t10k", n_test)):
    x, y = make(n)
    images.write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte.gz", x)
    images.write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", y)
  return root


def tiny_run_config(workdir, data_dir, **kw):
  model_kw = {k: kw.pop(k) for k in list(kw) if k in convnet.Config.__dataclass_fields__}
  base = dict(model="convnet", dataset="mnist", data_dir=str(data_dir), workdir=str(workdir),
              batch_size=16, num_epochs=4, optimizer="adam", learning_rate=0.01,
              valid_fraction=0.2, max_norm=0.0, progress=False, tensorboard=False,
              log_every=2, model_config=tiny_convnet(conv_activation="relu", **model_kw))
  base.update(kw)
  return Config(**base)


# --- shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("padding,stride,pool_type,pool_size,pool_stride", [
    ("valid", 1, "max", 2, 2), ("same", 1, "avg", 2, 2), ("1", 2, "max", 3, 1),
    ("same", 2, "none", 2, 2), ("2", 1, "avg", 3, 1)])
def test_shapes_finite_and_jit_equals_nojit(padding, stride, pool_type, pool_size,
                                            pool_stride):
  cfg = tiny_convnet(conv_padding=padding, conv_stride=stride, pool_type=pool_type,
                     pool_size=pool_size, pool_stride=pool_stride)
  net = convnet.build(cfg, data_info((14, 14, 3)))
  params = net.init(jax.random.PRNGKey(0))
  batch = {"image": random_images((4, 14, 14, 3))}
  out = net.apply(params, batch)
  assert out.shape == (4, 4) and np.isfinite(np.asarray(out)).all()
  np.testing.assert_allclose(out, jax.jit(lambda p, b: net.apply(p, b))(params, batch),
                             rtol=1e-5, atol=1e-6)
  # The first dense layer sees exactly the flattened shape feature_shapes predicts.
  H, W, C = convnet.feature_shapes(cfg, (14, 14, 3))[-1][1]
  assert params["dense0"]["kernel"].shape == (H * W * C, 5)


def test_default_is_the_lectures_lenet():
  cfg = convnet.Config()
  shapes = dict(convnet.feature_shapes(cfg, (28, 28, 1)))
  assert shapes == {"input": (32, 32, 1), "conv0": (28, 28, 16), "pool0": (14, 14, 16),
                    "conv1": (10, 10, 128), "pool1": (5, 5, 128)}
  params = convnet.build(cfg, data_info((28, 28, 1), 10)).init(jax.random.PRNGKey(0))
  assert jax.tree.map(lambda a: a.shape, params) == {
      "conv0": {"kernel": (5, 5, 1, 16), "bias": (16,)},
      "conv1": {"kernel": (5, 5, 16, 128), "bias": (128,)},
      "dense0": {"kernel": (3200, 200), "bias": (200,)},
      "output": {"kernel": (200, 10), "bias": (10,)}}


@pytest.mark.parametrize("dense_widths", [(), (7,)])
def test_no_conv_blocks_is_logistic_regression_or_an_mlp(dense_widths):
  """The feedforward baselines: --channels= --dense_widths= is multinomial logistic
  regression on the (padded) pixels; one hidden width, a one-hidden-layer MLP."""
  cfg = tiny_convnet(channels=(), dense_widths=dense_widths)
  net = convnet.build(cfg, data_info((14, 14, 1), 4))
  params = net.init(jax.random.PRNGKey(0))
  shapes = jax.tree.map(lambda a: a.shape, params)
  if dense_widths:
    assert shapes == {"dense0": {"kernel": (196, 7), "bias": (7,)},
                      "output": {"kernel": (7, 4), "bias": (4,)}}
  else:
    assert shapes == {"output": {"kernel": (196, 4), "bias": (4,)}}
    batch = {"image": random_images((3, 14, 14, 1))}
    x = convnet.preprocess(batch["image"], cfg, data_info((14, 14, 1), 4).info).reshape(3, -1)
    np.testing.assert_allclose(net.apply(params, batch),
                               x @ params["output"]["kernel"] + params["output"]["bias"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("W,F,P,S", [(32, 5, 0, 1), (28, 5, 2, 1), (13, 3, 1, 2),
                                     (7, 3, 0, 2), (9, 4, 3, 3), (5, 5, 0, 1)])
def test_output_size_formula_matches_the_layer(W, F, P, S):
  formula = (W - F + 2 * P) / S + 1
  predicted = convnet.conv_output_size(W, F, S, str(P))
  assert predicted == int(formula)  # (W - F + 2P) / S + 1, rounded down
  layer = convnet.conv_layer(2, tiny_convnet(kernel_size=F, conv_stride=S,
                                             conv_padding=str(P)))
  x = jnp.ones((1, W, W + 1, 1))
  y = layer.apply(layer.init(jax.random.PRNGKey(0), x), x)
  assert y.shape == (1, predicted, convnet.conv_output_size(W + 1, F, S, str(P)), 2)
  if P == 0:  # "valid" is P = 0; "same" keeps ceil(W / S)
    assert convnet.conv_output_size(W, F, S, "valid") == predicted
  same = convnet.conv_layer(2, tiny_convnet(kernel_size=F, conv_stride=S, conv_padding="same"))
  assert same.apply(same.init(jax.random.PRNGKey(0), x), x).shape[1] == -(-W // S)


@pytest.mark.parametrize("impl,padding,stride", [
    ("patches", "valid", 1), ("patches", "same", 2), ("patches", "2", 1), ("patches", "1", 3),
    ("mixed", "valid", 1), ("mixed", "same", 2), ("mixed", "2", 1), ("mixed", "1", 3),
    ("blocks", "valid", 1), ("blocks", "same", 1), ("blocks", "2", 1)])
def test_matmul_convolutions_equal_xla_convolution(impl, padding, stride):
  # 11 x 9 inputs: odd output sizes, so the last 2x2 output blocks overhang the edge
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 11, 9, 3)), jnp.float32)
  layers = {i: convnet.conv_layer(4, tiny_convnet(kernel_size=3, conv_stride=stride,
                                                  conv_padding=padding, conv_impl=i))
            for i in ("xla", impl)}
  params = layers["xla"].init(jax.random.PRNGKey(0), x)
  outs = {i: jax.value_and_grad(lambda p, x: jnp.sum(jnp.tanh(layer.apply(p, x))),
                                argnums=(0, 1))(params, x)
          for i, layer in layers.items()}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               outs["xla"], outs[impl])
  assert layers[impl].init(jax.random.PRNGKey(0), x)["params"]["kernel"].shape == (3, 3, 3, 4)


def test_blocks_needs_stride_one():
  cfg = Config(model="convnet", model_config=tiny_convnet(conv_stride=2, conv_impl="blocks"))
  with pytest.raises(ConfigError, match="--conv_impl=blocks"):
    convnet.check(cfg)
  layer = convnet.conv_layer(4, cfg.model_config)
  with pytest.raises(ValueError, match="stride 1"):
    layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))


def test_network_too_deep_for_the_image_is_a_config_error():
  with pytest.raises(ConfigError, match="shrink to"):
    convnet.build(tiny_convnet(channels=(4, 4, 4, 4)), data_info((14, 14, 1)))


@pytest.mark.parametrize("padding,ok", [("valid", True), ("same", True), ("3", True),
                                        ("-1", False), ("full", False)])
def test_padding_flag_validation(padding, ok):
  cfg = Config(model="convnet", model_config=tiny_convnet(conv_padding=padding))
  if ok:
    convnet.check(cfg)
  else:
    with pytest.raises(ConfigError, match="--conv_padding"):
      convnet.check(cfg)


# --- the lectures' closed forms, plain numpy -------------------------------------------------

def cross_correlate_valid(x_NxHxWxI, w_FxFxIxO):
  """The forward convolution layer (no bias): y[r, c, o] = sum_{a,b,i} x[r+a, c+b, i] w[a, b, i, o]."""
  F = w_FxFxIxO.shape[0]
  Ho, Wo = x_NxHxWxI.shape[1] - F + 1, x_NxHxWxI.shape[2] - F + 1
  return sum(np.einsum("nrci,io->nrco", x_NxHxWxI[:, a:a + Ho, b:b + Wo], w_FxFxIxO[a, b])
             for a in range(F) for b in range(F))


def conv_filter_gradient(x_NxHxWxI, delta_NxHoxWoxO, F):
  """'Reverse convolution': dW[a, b, i, o] = sum_{n,r,c} x[n, r+a, c+b, i] delta[n, r, c, o],
  the valid cross-correlation of the input with the output error."""
  Ho, Wo = delta_NxHoxWoxO.shape[1:3]
  return np.stack([np.stack([
      np.einsum("nrci,nrco->io", x_NxHxWxI[:, a:a + Ho, b:b + Wo], delta_NxHoxWoxO)
      for b in range(F)]) for a in range(F)])


def conv_input_gradient(delta_NxHoxWoxO, w_FxFxIxO):
  """'Full convolution' of the error with the flipped filter: pad the error by F - 1 on
  every side and cross-correlate it with the filter rotated by 180 degrees."""
  F = w_FxFxIxO.shape[0]
  padded = np.pad(delta_NxHoxWoxO, ((0, 0), (F - 1, F - 1), (F - 1, F - 1), (0, 0)))
  flipped_OxI = w_FxFxIxO[::-1, ::-1].transpose(0, 1, 3, 2)
  return cross_correlate_valid(padded, flipped_OxI)


def max_pool(x_NxHxWxC, k, s):
  Ho, Wo = (x_NxHxWxC.shape[1] - k) // s + 1, (x_NxHxWxC.shape[2] - k) // s + 1
  out = np.empty((x_NxHxWxC.shape[0], Ho, Wo, x_NxHxWxC.shape[3]))
  for r in range(Ho):
    for c in range(Wo):
      out[:, r, c] = x_NxHxWxC[:, r * s:r * s + k, c * s:c * s + k].max(axis=(1, 2))
  return out


def max_pool_gradient(x_NxHxWxC, delta_NxHoxWoxC, k, s):
  """Each window's error goes to its arg-max input only (overlapping windows add up)."""
  grad = np.zeros_like(x_NxHxWxC)
  N, Ho, Wo, C = delta_NxHoxWoxC.shape
  for n in range(N):
    for r in range(Ho):
      for c in range(Wo):
        for ch in range(C):
          window = x_NxHxWxC[n, r * s:r * s + k, c * s:c * s + k, ch]
          a, b = np.unravel_index(np.argmax(window), window.shape)
          grad[n, r * s + a, c * s + b, ch] += delta_NxHoxWoxC[n, r, c, ch]
  return grad


def softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def softmax_xent_gradient(logits_BxK, labels_B):
  """d/dz of -log softmax(z)_y = y_hat - y."""
  return softmax(logits_BxK) - np.eye(logits_BxK.shape[-1])[labels_B]


def sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def sigmoid_derivative(z):
  s = sigmoid(z)
  return s * (1.0 - s)


def finite_difference(f, x, index, eps=1e-6):
  x_plus, x_minus = x.copy(), x.copy()
  x_plus[index] += eps
  x_minus[index] -= eps
  return (f(x_plus) - f(x_minus)) / (2 * eps)


def random_indices(shape, count, rng):
  return [tuple(rng.integers(0, d) for d in shape) for _ in range(count)]


# --- the gradient checks -----------------------------------------------------------------------

def test_conv_layer_gradients_are_reverse_and_full_convolutions():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
  layer = convnet.conv_layer(4, tiny_convnet(kernel_size=3))
  params = layer.init(jax.random.PRNGKey(0), jnp.asarray(x))
  y, vjp = jax.vjp(lambda p, x: layer.apply(p, x), params, jnp.asarray(x))
  w = np.asarray(params["params"]["kernel"], np.float64)
  bias = np.asarray(params["params"]["bias"], np.float64)
  np.testing.assert_allclose(y, cross_correlate_valid(x.astype(np.float64), w) + bias,
                             rtol=1e-5, atol=1e-5)
  delta = rng.normal(size=y.shape)
  dparams, dx = vjp(jnp.asarray(delta, jnp.float32))
  np.testing.assert_allclose(dparams["params"]["kernel"], conv_filter_gradient(x, delta, 3),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dparams["params"]["bias"], delta.sum((0, 1, 2)), rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(dx, conv_input_gradient(delta, w), rtol=1e-4, atol=1e-4)


def test_conv_closed_forms_match_finite_differences():
  rng = np.random.default_rng(1)
  x, w = rng.normal(size=(2, 7, 6, 2)), rng.normal(size=(3, 3, 2, 4))
  target = rng.normal(size=(2, 5, 4, 4))
  # A nonlinear loss, so the check also covers the chain rule through tanh.
  loss = lambda x, w: np.sum(target * np.tanh(cross_correlate_valid(x, w)))
  z = cross_correlate_valid(x, w)
  delta = target * (1 - np.tanh(z) ** 2)
  dw, dx = conv_filter_gradient(x, delta, 3), conv_input_gradient(delta, w)
  for i in random_indices(w.shape, 10, rng):
    assert finite_difference(lambda v: loss(x, v), w, i) == pytest.approx(dw[i], rel=1e-6,
                                                                          abs=1e-8)
  for i in random_indices(x.shape, 10, rng):
    assert finite_difference(lambda v: loss(v, w), x, i) == pytest.approx(dx[i], rel=1e-6,
                                                                          abs=1e-8)


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (2, 1)])
def test_max_pool_gradient_goes_to_the_arg_max_only(k, s):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 7, 6, 3))  # continuous values: no ties
  y, vjp = jax.vjp(lambda x: convnet.pool(x, "max", k, s), jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(y, max_pool(x, k, s), rtol=1e-6)
  delta = rng.normal(size=y.shape)
  (dx,) = vjp(jnp.asarray(delta, jnp.float32))
  expected = max_pool_gradient(x, delta, k, s)
  np.testing.assert_allclose(dx, expected, rtol=1e-5, atol=1e-6)
  assert np.count_nonzero(np.asarray(dx)) <= delta.size  # at most one input per window
  for i in random_indices(x.shape, 10, rng):
    fd = finite_difference(lambda v: np.sum(delta * max_pool(v, k, s)), x, i)
    assert fd == pytest.approx(expected[i], abs=1e-6)


def test_softmax_cross_entropy_gradient_is_y_hat_minus_y():
  rng = np.random.default_rng(3)
  logits, labels = rng.normal(size=(5, 4)), rng.integers(0, 4, 5)
  grad = jax.grad(lambda z: losses.per_example("softmax_xent", z, jnp.asarray(labels)).sum())(
      jnp.asarray(logits, jnp.float32))
  expected = softmax_xent_gradient(logits, labels)
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
  xent = lambda z: -np.sum(np.log(softmax(z))[np.arange(5), labels])
  for i in random_indices(logits.shape, 8, rng):
    assert finite_difference(xent, logits, i) == pytest.approx(expected[i], abs=1e-7)


def test_sigmoid_derivative_is_s_times_one_minus_s():
  z = np.linspace(-6, 6, 25)
  grad = jax.vmap(jax.grad(convnet.ACTIVATIONS["sigmoid"]))(jnp.asarray(z, jnp.float32))
  np.testing.assert_allclose(grad, sigmoid_derivative(z), rtol=1e-5, atol=1e-7)
  fd = np.array([finite_difference(lambda v: sigmoid(v).sum(), z, (i,)) for i in range(25)])
  np.testing.assert_allclose(fd, sigmoid_derivative(z), rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_backprop_by_the_lectures_equals_jax_grad_of_the_whole_network(activation):
  """LeNet in miniature, backpropagated by hand with the closed forms above."""
  cfg = tiny_convnet(conv_activation=activation, dense_activation=activation,
                     normalize="none")
  net = convnet.build(cfg, data_info((14, 14, 1), 4))
  params = net.init(jax.random.PRNGKey(1))
  images_u8 = random_images((3, 14, 14, 1), seed=4)
  labels = np.array([0, 3, 1])

  def loss(p):
    logits = net.apply(p, {"image": images_u8})
    return losses.per_example("softmax_xent", logits, jnp.asarray(labels)).mean()

  grads = jax.grad(loss)(params)
  P = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  act = {"tanh": np.tanh, "sigmoid": sigmoid}[activation]
  dact = {"tanh": lambda h: 1 - h ** 2, "sigmoid": lambda h: h * (1 - h)}[activation]

  def forward(P):
    a0 = np.asarray(images_u8, np.float64) / 255
    h1 = act(cross_correlate_valid(a0, P["conv0"]["kernel"]) + P["conv0"]["bias"])
    p1 = max_pool(h1, 2, 2)
    h2 = act(cross_correlate_valid(p1, P["conv1"]["kernel"]) + P["conv1"]["bias"])
    p2 = max_pool(h2, 2, 2)
    f = p2.reshape(len(p2), -1)
    h3 = act(f @ P["dense0"]["kernel"] + P["dense0"]["bias"])
    logits = h3 @ P["output"]["kernel"] + P["output"]["bias"]
    return dict(a0=a0, h1=h1, p1=p1, h2=h2, p2=p2, f=f, h3=h3, logits=logits)

  v = forward(P)
  d_logits = softmax_xent_gradient(v["logits"], labels) / len(labels)
  dh3 = d_logits @ P["output"]["kernel"].T
  dz3 = dh3 * dact(v["h3"])
  dp2 = (dz3 @ P["dense0"]["kernel"].T).reshape(v["p2"].shape)
  dz2 = max_pool_gradient(v["h2"], dp2, 2, 2) * dact(v["h2"])
  dp1 = conv_input_gradient(dz2, P["conv1"]["kernel"])
  dz1 = max_pool_gradient(v["h1"], dp1, 2, 2) * dact(v["h1"])
  by_hand = {
      "output": {"kernel": v["h3"].T @ d_logits, "bias": d_logits.sum(0)},
      "dense0": {"kernel": v["f"].T @ dz3, "bias": dz3.sum(0)},
      "conv1": {"kernel": conv_filter_gradient(v["p1"], dz2, 3), "bias": dz2.sum((0, 1, 2))},
      "conv0": {"kernel": conv_filter_gradient(v["a0"], dz1, 3), "bias": dz1.sum((0, 1, 2))}}
  for layer in by_hand:
    for name in ("kernel", "bias"):
      np.testing.assert_allclose(grads[layer][name], by_hand[layer][name], rtol=2e-3,
                                 atol=2e-6, err_msg=f"{layer}/{name}")

  def numpy_loss(layer, name, value):
    Q = {l: dict(d) for l, d in P.items()}
    Q[layer][name] = value
    z = forward(Q)["logits"]
    return -np.mean(np.log(softmax(z))[np.arange(len(labels)), labels])

  rng = np.random.default_rng(5)
  for layer in by_hand:  # and the hand-derived gradients against finite differences
    w = P[layer]["kernel"]
    for i in random_indices(w.shape, 3, rng):
      fd = finite_difference(lambda x: numpy_loss(layer, "kernel", x), w, i)
      assert fd == pytest.approx(by_hand[layer]["kernel"][i], rel=1e-5, abs=1e-9)


# --- preprocessing and augmentation ------------------------------------------------------------

def test_preprocess_pads_with_background_then_normalizes():
  cfg = tiny_convnet(input_padding=2, normalize="global")
  stats = {"pixel_mean_global": 30.0, "pixel_std_global": 80.0}
  x = convnet.preprocess(jnp.full((1, 3, 3, 1), 255, jnp.uint8), cfg, stats)
  assert x.shape == (1, 7, 7, 1)
  np.testing.assert_allclose(x[0, 0, 0, 0], (0 - 30) / 80, rtol=1e-5)  # padding = pixel 0
  np.testing.assert_allclose(x[0, 3, 3, 0], (255 - 30) / 80, rtol=1e-5)


def test_augmentation_crops_shifted_windows_and_flips_deterministically():
  x = random_images((6, 5, 5, 2)).astype(jnp.float32)
  out = convnet.augment(x, jax.random.PRNGKey(3), crop_padding=2, flip=True)
  np.testing.assert_array_equal(out, convnet.augment(x, jax.random.PRNGKey(3), 2, True))
  assert not np.array_equal(out, convnet.augment(x, jax.random.PRNGKey(4), 2, True))
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
  for n in range(6):  # every output is a 5x5 window of the padded image, maybe flipped
    windows = [padded[n, r:r + 5, c:c + 5] for r in range(5) for c in range(5)]
    windows += [w[:, ::-1] for w in windows]
    assert any(np.array_equal(out[n], w) for w in windows)
  cfg = tiny_convnet(random_crop=2, random_flip=True)
  net = convnet.build(cfg, data_info((14, 14, 1)))
  params = net.init(jax.random.PRNGKey(0))
  batch = {"image": random_images((4, 14, 14, 1))}
  np.testing.assert_array_equal(net.apply(params, batch), net.apply(params, batch))  # eval


# --- training through the shared trainer ----------------------------------------------------------

def test_one_step_changes_every_parameter(tmp_path):
  data_dir = write_synthetic_mnist(tmp_path / "data")
  cfg = tiny_run_config(tmp_path / "wd", data_dir, optimizer="momentum", learning_rate=0.1,
                        dense_dropout=0.3, random_crop=1)
  trainer = Trainer(cfg, datasets.prepare(datasets.load_raw(cfg), cfg))
  state = trainer.initial_state()
  before = jax.device_get(state.params)
  state, metrics = trainer.train_step(state, next(trainer.batches(0)))
  assert_every_param_changed(before, state.params)
  assert np.isfinite(float(metrics["loss"]))


def test_end_to_end_on_synthetic_idx_files_then_evaluate(tmp_path):
  data_dir = write_synthetic_mnist(tmp_path / "data")
  wd = tmp_path / "wd"
  summary = train_and_evaluate(tiny_run_config(wd, data_dir, num_epochs=6))
  assert summary["test/accuracy"] > 0.8  # three block positions: easy
  info = json.loads((wd / "data.json").read_text())
  assert info["sizes"] == {"train": 96, "valid": 24, "test": 40}
  assert info["info"]["image_shape"] == [12, 12, 1]
  env = cli_env()
  test_images = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
  result = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={wd}",
                           f"--test_file={test_images}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  line = json.loads(result.stdout.strip().splitlines()[-1])
  assert line["examples"] == 40
  assert line["accuracy"] == pytest.approx(summary["test/accuracy"])  # same best checkpoint


def test_mock_tfds_end_to_end_with_augmentation(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  cfg = tiny_run_config(tmp_path / "wd", "", dataset="tfds:cifar10", num_epochs=1,
                        batch_size=8, random_crop=2, random_flip=True, pool_size=3)
  with tfds.testing.mock_data(num_examples=24):
    summary = train_and_evaluate(cfg)
  assert 0.0 <= summary["test/accuracy"] <= 1.0
  info = json.loads((tmp_path / "wd" / "data.json").read_text())
  assert info["info"]["image_shape"] == [32, 32, 3] and info["num_classes"] == 10
