"""The sentence CNN's specification: shapes, padding invariance, wide/narrow, embeddings."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import textcnn
from tests.conftest import tiny_textcnn

V = 30


def info(num_outputs=3, pretrained=None):
  return types.SimpleNamespace(vocab_size=V, num_outputs=num_outputs, pretrained=pretrained)


def batch(lengths, max_len, seed=0):
  rng = np.random.default_rng(seed)
  tokens = np.zeros((len(lengths), max_len), np.int32)
  for i, n in enumerate(lengths):
    tokens[i, :n] = rng.integers(2, V, n)
  return {"tokens": jnp.asarray(tokens), "length": jnp.asarray(lengths, jnp.int32)}


@pytest.mark.parametrize("conv", ["wide", "narrow"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_shapes_finite_and_jit_equals_nojit(conv, pooling, activation):
  net = textcnn.build(tiny_textcnn(conv=conv, pooling=pooling, activation=activation), info())
  params = net.init(jax.random.PRNGKey(0))
  b = batch([5, 1, 9, 3], 9)
  out = net.apply(params, b)
  assert out.shape == (4, 3)
  assert np.isfinite(np.asarray(out)).all()
  jitted = jax.jit(lambda p, x: net.apply(p, x))(params, b)
  np.testing.assert_allclose(out, jitted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv", ["wide", "narrow"])
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_batch_padding_does_not_change_outputs(conv, pooling):
  net = textcnn.build(tiny_textcnn(conv=conv, pooling=pooling), info())
  params = net.init(jax.random.PRNGKey(1))
  short = batch([4, 2, 6], 6)
  longer = {"tokens": jnp.pad(short["tokens"], ((0, 0), (0, 11))), "length": short["length"]}
  np.testing.assert_allclose(net.apply(params, short), net.apply(params, longer),
                             rtol=1e-5, atol=1e-6)


def test_pool_padding_equals_kims_max_over_the_whole_padded_sentence():
  """Kim's code pads every sentence with max_w - 1 zeros in front and zeros up to the
  dataset's longest + max_w - 1 behind, then max-pools over every window; with
  --pool_padding the masked model gives the same from a batch of any padding."""
  widths, lengths, longest = (2, 3), [4, 1, 6], 9
  net = textcnn.build(tiny_textcnn(filter_widths=widths, conv="wide", pool_padding=True),
                      info())
  kim = textcnn.build(tiny_textcnn(filter_widths=widths, conv="narrow"), info())
  params = net.init(jax.random.PRNGKey(3))
  for w in widths:  # biases that some sentence's filter outputs fall below
    params[f"conv{w}"]["bias"] = jnp.linspace(-0.5, 1.0, params[f"conv{w}"]["bias"].size)
  b = batch(lengths, max(lengths))
  pad = max(widths) - 1
  kim_tokens = jnp.pad(b["tokens"], ((0, 0), (pad, longest - max(lengths) + pad)))
  full = jnp.full(len(lengths), kim_tokens.shape[1], jnp.int32)
  np.testing.assert_allclose(net.apply(params, b),
                             kim.apply(params, {"tokens": kim_tokens, "length": full}),
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(net.apply(params, b),
                         textcnn.build(tiny_textcnn(filter_widths=widths), info()).apply(params, b))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_kim_weight_init(activation):
  """--weight_init=kim: conv kernels U[-0.01, 0.01] for ReLU, Glorot uniform for tanh, a
  zero output layer (so every class starts at the same score), embeddings U[-0.25, 0.25]
  as with any init."""
  net = textcnn.build(tiny_textcnn(weight_init="kim", activation=activation), info())
  params = net.init(jax.random.PRNGKey(0))
  for w in (2, 3):  # tiny_textcnn: widths 2, 3; 8 embedding dims in, 4 maps out
    bound = 0.01 if activation == "relu" else np.sqrt(6 / (w * 8 + w * 4))
    assert 0.5 * bound < np.abs(params[f"conv{w}"]["kernel"]).max() <= bound
  np.testing.assert_array_equal(params["output"]["kernel"], 0.0)
  assert 0.2 < np.abs(params["embed"]["embedding"]).max() <= 0.25
  out = net.apply(params, batch([5, 2], 5))
  assert (np.asarray(out) == np.asarray(out)[:, :1]).all()


def test_sentences_shorter_than_the_widest_filter():
  cfg = tiny_textcnn(filter_widths=(3, 4, 5), conv="narrow")
  net = textcnn.build(cfg, info())
  params = net.init(jax.random.PRNGKey(0))
  out = net.apply(params, batch([1, 2, 0], 2))  # max_len 2 < width 5; one empty sentence
  assert out.shape == (3, 3) and np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("n,w", [(7, 3), (3, 3), (2, 5), (1, 1)])
def test_wide_and_narrow_output_lengths(n, w):
  assert textcnn.conv_output_length(n, w, "wide") == n + w - 1
  assert textcnn.conv_output_length(n, w, "narrow") == max(n - w + 1, 1)
  # The layer's own activations have that many valid positions: probe them through
  # average pooling of a constant-response filter.
  for conv in ("wide", "narrow"):
    cfg = tiny_textcnn(filter_widths=(w,), num_filters=1, conv=conv, pooling="avg",
                       activation="relu", dropout=0.0)
    net = textcnn.build(cfg, info(num_outputs=1))
    params = net.init(jax.random.PRNGKey(0))
    params = jax.tree.map(jnp.zeros_like, params)
    # kernel 0, bias 1 -> every valid position outputs relu(1) = 1; avg = 1 regardless of
    # count, so use the sum instead: output weight 1, avg * count recovered below.
    params[f"conv{w}"]["bias"] = jnp.ones((1,))
    params["output"]["kernel"] = jnp.ones((1, 1))
    b = batch([n], n + 6)
    # Mark positions with a ramp in the embedding so the avg reveals how many were pooled.
    pooled = _pooled_count(net, params, b, w, conv)
    assert pooled == textcnn.conv_output_length(n, w, conv)


def _pooled_count(net, params, b, w, conv):
  """Counts pooled positions: avg pooling of an indicator that is 1 only at position 0."""
  L = b["tokens"].shape[1]
  pad = w - 1 if conv == "wide" else 0
  T = L + 2 * pad - w + 1 if conv == "wide" else max(L, w) - w + 1
  h = np.zeros(T, np.float32)
  h[0] = 1.0
  valid = np.arange(T) < np.asarray(textcnn._valid_outputs(b["length"], w, conv))[0]
  avg = textcnn._pool(jnp.asarray(h)[None, :, None], jnp.asarray(valid)[None], "avg")
  return int(round(1.0 / float(avg[0, 0])))


def test_pretrained_modes_use_the_table_and_static_is_frozen():
  table = np.random.default_rng(0).normal(size=(V, 8)).astype(np.float32)
  table[0] = 0
  for mode, names in [("static", ["frozen_embed"]), ("non-static", ["embed"]),
                      ("multichannel", ["embed", "frozen_embed"])]:
    net = textcnn.build(tiny_textcnn(embedding_mode=mode, embeddings="x"),
                        info(pretrained=table))
    params = net.init(jax.random.PRNGKey(0))
    assert sorted(k for k in params if "embed" in k) == sorted(names)
    for name in names:
      np.testing.assert_array_equal(params[name]["embedding"], table)
    grads = jax.grad(lambda p: net.apply(p, batch([3, 5], 5)).sum())(params)
    if "frozen_embed" in grads:
      assert not np.asarray(grads["frozen_embed"]["embedding"]).any()
    if "embed" in grads:
      assert np.asarray(grads["embed"]["embedding"]).any()
  # multichannel: every filter sees both channels (2 * D input features)
  assert params["conv2"]["kernel"].shape == (2, 16, 4)


def test_dropout_only_in_training():
  net = textcnn.build(tiny_textcnn(dropout=0.5), info())
  params = net.init(jax.random.PRNGKey(0))
  b = batch([3, 4], 4)
  a1 = net.apply(params, b, train=True, rng=jax.random.PRNGKey(1))
  a2 = net.apply(params, b, train=True, rng=jax.random.PRNGKey(2))
  assert not np.allclose(a1, a2)
  np.testing.assert_array_equal(net.apply(params, b), net.apply(params, b))


def test_dropout_scaling_test_is_kims_convention():
  """--dropout_scaling=test keeps units unscaled in training and scales by 1-p at test
  (Kim; Hinton et al. 2012): the same function as inverted dropout whose output weights
  are 1-p times as large, so --max_norm bounds the training-time weights."""
  p = 0.5
  kim = textcnn.build(tiny_textcnn(dropout=p, dropout_scaling="test"), info())
  inverted = textcnn.build(tiny_textcnn(dropout=p), info())
  params = kim.init(jax.random.PRNGKey(0))
  out = params["output"]
  scaled = {**params, "output": {**out, "kernel": out["kernel"] * (1 - p)}}
  b, rng = batch([3, 5, 2], 5), jax.random.PRNGKey(3)
  np.testing.assert_allclose(kim.apply(params, b), inverted.apply(scaled, b),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(kim.apply(params, b, train=True, rng=rng),
                             inverted.apply(scaled, b, train=True, rng=rng),
                             rtol=1e-5, atol=1e-6)
