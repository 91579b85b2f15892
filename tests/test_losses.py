"""Specification of nets.losses: each loss per example, computed by hand, and its prediction rule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from nets import losses
from nets.config import LOSSES


def _log_softmax(row):
  m = max(row)
  return [x - m - math.log(sum(math.exp(v - m) for v in row)) for x in row]


def _sigmoid(z):
  return 1.0 / (1.0 + math.exp(-z))


def _torch_multi_margin(x, y, margin=1.0):
  """torch.nn.MultiMarginCriterion(p=1), one example: sum_{j != y} max(0, m - x[y] + x[j]) / K."""
  K = len(x)
  total = 0.0
  for j in range(K):
    if j != y:
      total += max(0.0, margin - x[y] + x[j])
  return total / K


# --- softmax cross-entropy -------------------------------------------------------------


def test_softmax_xent_is_minus_log_softmax_of_the_label():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 4)).astype(np.float32) * 3
  labels = np.array([0, 1, 2, 3, 1, 0], np.int32)
  got = np.asarray(losses.per_example("softmax_xent", jnp.asarray(logits), jnp.asarray(labels)))
  want = [-_log_softmax([float(v) for v in logits[i]])[labels[i]] for i in range(6)]
  assert got.shape == (6,)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_softmax_xent_known_values():
  # Equal logits over K classes: log K. Confident right answer: ~0.
  got = losses.per_example("softmax_xent", jnp.array([[0.0, 0.0, 0.0, 0.0], [20.0, 0.0, 0.0, 0.0]]),
                           jnp.array([2, 0]))
  np.testing.assert_allclose(got, [math.log(4.0), 3 * math.exp(-20.0)], rtol=1e-4, atol=1e-7)


def test_softmax_xent_is_stable_for_large_logits():
  got = losses.per_example("softmax_xent", jnp.array([[1000.0, 0.0]]), jnp.array([1]))
  np.testing.assert_allclose(got, [1000.0], rtol=1e-6)


# --- sigmoid cross-entropy (one logit) -------------------------------------------------


def test_sigmoid_xent_on_one_logit_is_binary_cross_entropy():
  z = np.array([-3.0, -0.5, 0.0, 0.25, 2.0, 4.0], np.float32)
  y = np.array([0, 1, 1, 0, 1, 0], np.int32)
  got = np.asarray(losses.per_example("sigmoid_xent", jnp.asarray(z[:, None]), jnp.asarray(y)))
  want = [-(yi * math.log(_sigmoid(float(zi))) + (1 - yi) * math.log(1 - _sigmoid(float(zi))))
          for zi, yi in zip(z, y)]
  assert got.shape == (6,)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sigmoid_xent_at_logit_zero_is_log_two():
  got = losses.per_example("sigmoid_xent", jnp.zeros((2, 1)), jnp.array([0, 1]))
  np.testing.assert_allclose(got, [math.log(2.0)] * 2, rtol=1e-6)


# --- multiclass hinge (Weston-Watkins, Torch MultiMarginCriterion) ---------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hinge_matches_torch_multi_margin_criterion(seed):
  rng = np.random.default_rng(seed)
  B, K = 16, 5
  logits = rng.normal(size=(B, K)).astype(np.float32) * 1.5
  labels = rng.integers(0, K, size=B).astype(np.int32)
  got = np.asarray(losses.per_example("hinge", jnp.asarray(logits), jnp.asarray(labels)))
  want = [_torch_multi_margin([float(v) for v in logits[b]], int(labels[b])) for b in range(B)]
  assert got.shape == (B,)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_hinge_known_values():
  logits = jnp.array([
      [5.0, 0.0, 0.0],    # label beats every other class by more than the margin: 0
      [0.0, 0.0, 0.0],    # all tied: each of the 2 other classes costs the margin: 2/3
      [0.0, 2.0, -5.0],   # label 0: class 1 costs 1 + 2 = 3, class 2 costs 0: 3/3
  ])
  got = losses.per_example("hinge", logits, jnp.array([0, 1, 0]))
  np.testing.assert_allclose(got, [0.0, 2.0 / 3.0, 1.0], rtol=1e-6)


def test_hinge_margin_argument():
  got = losses.multiclass_hinge(jnp.array([[0.0, 0.0]]), jnp.array([0]), margin=3.0)
  np.testing.assert_allclose(got, [3.0 / 2.0], rtol=1e-6)


def test_hinge_gradient_matches_finite_differences_at_a_generic_point():
  rng = np.random.default_rng(11)
  B, K = 4, 5
  logits = rng.normal(size=(B, K)) * 2.0
  labels = rng.integers(0, K, size=B)
  # Generic point: no hinge term sits within 0.05 of its kink, so the loss is smooth here.
  s_y = logits[np.arange(B), labels][:, None]
  assert np.min(np.abs(1.0 - s_y + logits)) > 0.05
  active = (1.0 - s_y + logits > 0) & (np.arange(K)[None, :] != labels[:, None])
  assert 0 < active.sum() < B * (K - 1), "both active and inactive hinge terms"
  x = jnp.asarray(logits, jnp.float32)
  y = jnp.asarray(labels, jnp.int32)
  f = lambda x: jnp.sum(losses.per_example("hinge", x, y))
  # Piecewise linear and 0.05 from every kink: central differences with eps 0.01 are exact
  # up to float32 rounding.
  jtu.check_grads(f, (x,), order=1, modes=["rev"], eps=1e-2, atol=1e-3, rtol=1e-3)
  # And the gradient itself, by the rule: d/dx_j = 1/K for each active j != y,
  # d/dx_y = -(number of active j)/K.
  g = np.asarray(jax.grad(f)(x))
  want = active / K
  want[np.arange(B), labels] = -active.sum(axis=1) / K
  np.testing.assert_allclose(g, want, atol=1e-6)


# --- the prediction rule -------------------------------------------------------------


@pytest.mark.parametrize("loss", ["softmax_xent", "hinge"])
def test_predict_is_argmax_for_multi_logit_losses(loss):
  logits = jnp.array([[0.1, 2.0, -1.0], [3.0, 2.0, 1.0], [-1.0, -2.0, -0.5]])
  got = losses.predict(loss, logits)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, [1, 0, 2])


def test_predict_sigmoid_thresholds_the_single_logit_at_zero():
  z = jnp.array([[-5.0], [-1e-3], [0.0], [1e-3], [7.0]])
  got = losses.predict("sigmoid_xent", z)
  assert got.dtype == jnp.int32 and got.shape == (5,)
  # sigmoid(z) > 0.5 exactly when z > 0; z == 0 (probability 0.5) predicts class 0.
  np.testing.assert_array_equal(got, [0, 0, 0, 1, 1])


def test_num_outputs():
  assert losses.num_outputs("sigmoid_xent", 2) == 1
  assert losses.num_outputs("softmax_xent", 2) == 2
  assert losses.num_outputs("hinge", 6) == 6
  assert losses.num_outputs("softmax_xent", 5) == 5


@pytest.mark.parametrize("loss", LOSSES)
def test_every_configured_loss_runs_on_num_outputs_logits(loss):
  K = losses.num_outputs(loss, 2)
  logits = jnp.linspace(-1.0, 1.0, 3 * K).reshape(3, K)
  labels = jnp.array([0, 1, 1])
  per = losses.per_example(loss, logits, labels)
  assert per.shape == (3,) and bool(jnp.all(jnp.isfinite(per))) and bool(jnp.all(per >= 0))
  assert losses.predict(loss, logits).shape == (3,)


def test_unknown_loss_is_an_error():
  with pytest.raises(ValueError, match="nope"):
    losses.per_example("nope", jnp.zeros((1, 2)), jnp.array([0]))
