"""Specification of nets.regularizers on a small hand-built params dict.

Penalties see only `kernel` leaves (dense and convolution weights); biases and
embedding tables are never penalised, so their gradient is exactly zero.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import regularizers

# Known numbers, float32 throughout. Convolution kernel is (width, in, out).
CONV = np.array([[[1.0, -2.0]], [[0.5, 0.0]], [[-3.0, 4.0]]], np.float32)     # (3, 1, 2)
CONV_BIAS = np.array([10.0, -20.0], np.float32)
# Output kernel is (in, out): one column per output unit.
# Column norms: col0 = sqrt(9+16) = 5, col1 = sqrt(1+0) = 1, col2 = sqrt(4+4) ~ 2.83.
OUT = np.array([[3.0, 1.0, 2.0],
                [4.0, 0.0, -2.0]], np.float32)                                  # (2, 3)
OUT_BIAS = np.array([0.5, -0.5, 7.0], np.float32)
EMBED = np.array([[100.0, -200.0], [300.0, 400.0]], np.float32)


def make_params():
  return {
      "conv3": {"kernel": jnp.asarray(CONV), "bias": jnp.asarray(CONV_BIAS)},
      "output": {"kernel": jnp.asarray(OUT), "bias": jnp.asarray(OUT_BIAS)},
      "embed": {"embedding": jnp.asarray(EMBED)},
  }


def np64(x):
  return np.asarray(x, np.float64)


# Hand-computed values.
L1 = (1 + 2 + 0.5 + 0 + 3 + 4) + (3 + 1 + 2 + 4 + 0 + 2)                        # 10.5 + 12
L2 = (1 + 4 + 0.25 + 0 + 9 + 16) + (9 + 1 + 4 + 16 + 0 + 4)                     # 30.25 + 34
FRO = np.sqrt(30.25) + np.sqrt(34.0)                                            # 5.5 + sqrt(34)


def test_weight_matrices_are_exactly_the_kernels():
  ws = regularizers.weight_matrices(make_params())
  shapes = sorted(w.shape for w in ws)
  assert shapes == sorted([CONV.shape, OUT.shape])


def test_hand_computed_numbers_are_what_the_test_claims():
  assert L1 == pytest.approx(np.abs(CONV).sum() + np.abs(OUT).sum())
  assert L2 == pytest.approx(np.square(np64(CONV)).sum() + np.square(np64(OUT)).sum())
  assert FRO == pytest.approx(np.linalg.norm(np64(CONV)) + np.linalg.norm(np64(OUT)))


@pytest.mark.parametrize("fn, expected", [
    (regularizers.l1, L1),
    (regularizers.l2, L2),
    (regularizers.frobenius, FRO),
], ids=["l1", "l2", "frobenius"])
def test_value_ignores_biases_and_embeddings(fn, expected):
  assert float(fn(make_params())) == pytest.approx(expected, rel=1e-6)


def test_values_do_not_depend_on_biases_or_embeddings():
  p = make_params()
  q = jax.tree.map(lambda x: x, p)
  q["conv3"]["bias"] = q["conv3"]["bias"] * 1000
  q["embed"]["embedding"] = -q["embed"]["embedding"]
  for fn in (regularizers.l1, regularizers.l2, regularizers.frobenius):
    assert float(fn(q)) == float(fn(p))


def _hand_grads(kind):
  """The hand-derived gradient for each kernel."""
  if kind == "l1":
    return {"conv3": np.sign(CONV), "output": np.sign(OUT)}
  if kind == "l2":
    return {"conv3": 2 * CONV, "output": 2 * OUT}
  if kind == "frobenius":
    return {"conv3": CONV / np.linalg.norm(CONV), "output": OUT / np.linalg.norm(OUT)}
  raise ValueError(kind)


@pytest.mark.parametrize("kind", ["l1", "l2", "frobenius"])
def test_gradient_is_hand_derived_on_kernels_and_zero_elsewhere(kind):
  fn = getattr(regularizers, kind)
  g = jax.grad(fn)(make_params())
  want = _hand_grads(kind)
  for layer, w in (("conv3", CONV), ("output", OUT)):
    got = np.asarray(g[layer]["kernel"])
    away = w != 0
    np.testing.assert_allclose(got[away], want[layer][away], rtol=1e-6, atol=1e-7)
    # At W == 0 (CONV has one zero) |W| has no derivative; any subgradient in [-1, 1] is
    # valid (jax picks +1, np.sign 0). l2 and frobenius are smooth there: gradient 0.
    assert np.all(np.abs(got[~away]) <= 1.0)
    if kind != "l1":
      assert np.all(got[~away] == 0.0)
  for name, leaf in [("conv3/bias", g["conv3"]["bias"]),
                     ("output/bias", g["output"]["bias"]),
                     ("embed/embedding", g["embed"]["embedding"])]:
    assert np.all(np.asarray(leaf) == 0.0), f"{name} must never be penalised"


def test_penalty_is_the_weighted_sum():
  p = make_params()
  got = regularizers.penalty(p, l1_weight=0.1, l2_weight=0.01, frobenius_weight=2.0)
  assert float(got) == pytest.approx(0.1 * L1 + 0.01 * L2 + 2.0 * FRO, rel=1e-6)
  assert float(regularizers.penalty(p, l2_weight=0.5)) == pytest.approx(0.5 * L2, rel=1e-6)


def test_penalty_with_no_weights_is_zero():
  got = regularizers.penalty(make_params())
  assert got.shape == () and float(got) == 0.0


def test_penalty_gradient_is_weighted_sum_of_gradients():
  weights = dict(l1_weight=0.1, l2_weight=0.01, frobenius_weight=2.0)
  g = jax.grad(lambda p: regularizers.penalty(p, **weights))(make_params())
  hand = {k: _hand_grads(k) for k in ("l1", "l2", "frobenius")}
  for layer, w in (("conv3", CONV), ("output", OUT)):
    want = (0.1 * hand["l1"][layer] + 0.01 * hand["l2"][layer]
            + 2.0 * hand["frobenius"][layer])
    away = w != 0  # l1's subgradient at 0 is a convention (see above)
    np.testing.assert_allclose(np.asarray(g[layer]["kernel"])[away], want[away],
                               rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(g["embed"]["embedding"]) == 0.0)
  assert np.all(np.asarray(g["output"]["bias"]) == 0.0)


# Output-kernel column norms: [5, 1, sqrt(8) ~ 2.83].
def test_max_norm_rescales_exactly_the_columns_above_the_limit():
  p = make_params()
  out = regularizers.max_norm(p, 3.0)
  w = np.asarray(out["output"]["kernel"])
  norms = np.linalg.norm(np64(w), axis=0)
  # Column 0 (norm 5) is scaled down to norm == limit, direction kept.
  assert norms[0] == pytest.approx(3.0, rel=1e-6)
  np.testing.assert_allclose(w[:, 0], OUT[:, 0] * (3.0 / 5.0), rtol=1e-6)
  # Columns 1 and 2 (norms 1 and 2.83) are within the limit: bitwise unchanged.
  np.testing.assert_array_equal(w[:, 1:], OUT[:, 1:])


def test_max_norm_leaves_every_other_param_bitwise_unchanged():
  p = make_params()
  out = regularizers.max_norm(p, 3.0)
  assert set(out) == set(p)
  np.testing.assert_array_equal(out["output"]["bias"], OUT_BIAS)
  np.testing.assert_array_equal(out["conv3"]["kernel"], CONV)   # only the output layer
  np.testing.assert_array_equal(out["conv3"]["bias"], CONV_BIAS)
  np.testing.assert_array_equal(out["embed"]["embedding"], EMBED)
  # And the input is not mutated.
  np.testing.assert_array_equal(p["output"]["kernel"], OUT)


def test_max_norm_with_all_columns_below_limit_is_bitwise_identity():
  out = regularizers.max_norm(make_params(), 100.0)
  np.testing.assert_array_equal(out["output"]["kernel"], OUT)


def test_max_norm_with_tiny_limit_scales_every_column_to_the_limit():
  out = regularizers.max_norm(make_params(), 0.5)
  norms = np.linalg.norm(np64(out["output"]["kernel"]), axis=0)
  np.testing.assert_allclose(norms, [0.5, 0.5, 0.5], rtol=1e-6)


def test_max_norm_limit_zero_is_a_no_op():
  p = make_params()
  out = regularizers.max_norm(p, 0.0)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(p)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(out["output"]["kernel"], OUT)


def test_max_norm_without_the_layer_is_a_no_op():
  p = make_params()
  del p["output"]
  out = regularizers.max_norm(p, 1.0)
  np.testing.assert_array_equal(out["conv3"]["kernel"], CONV)


def test_max_norm_names_another_layer():
  p = {"logits": {"kernel": jnp.asarray(OUT)}, "output": {"kernel": jnp.asarray(OUT)}}
  out = regularizers.max_norm(p, 1.0, layer="logits")
  np.testing.assert_allclose(np.linalg.norm(np64(out["logits"]["kernel"]), axis=0),
                             [1.0, 1.0, 1.0], rtol=1e-6)
  np.testing.assert_array_equal(out["output"]["kernel"], OUT)


def test_max_norm_under_jit():
  out = jax.jit(lambda p: regularizers.max_norm(p, 3.0))(make_params())
  norms = np.linalg.norm(np64(out["output"]["kernel"]), axis=0)
  np.testing.assert_allclose(norms, [3.0, 1.0, np.sqrt(8.0)], rtol=1e-6)


def test_frobenius_gradient_at_an_all_zero_kernel_is_finite():
  p = make_params()
  p["output"]["kernel"] = jnp.zeros_like(p["output"]["kernel"])
  g = jax.grad(lambda p: regularizers.penalty(p, frobenius_weight=1.0))(p)
  assert np.all(np.isfinite(np.asarray(g["output"]["kernel"])))
  np.testing.assert_allclose(g["conv3"]["kernel"], CONV / np.linalg.norm(CONV), rtol=1e-6)
