"""Specification of nets.optim (optimizers by name, schedule, clipping, frozen params)
and of the config checks on the optimisation flags."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nets import config, optim
from nets.config import OPTIMIZERS, Config
from nets.errors import ConfigError


def tiny_params():
  return {
      "dense": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.1, -0.1])},
      "frozen_embed": {"embedding": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])},
      # Any path component starting with "frozen" freezes everything beneath it.
      "block": {"frozen_proj": {"kernel": jnp.array([[7.0, 8.0]])},
                "unfrozen": {"kernel": jnp.array([[9.0, -9.0]])}},
  }


TRAINABLE = [("dense", "kernel"), ("dense", "bias"), ("block", "unfrozen", "kernel")]
FROZEN = [("frozen_embed", "embedding"), ("block", "frozen_proj", "kernel")]


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _grads(params):
  """A gradient that is positive everywhere, frozen leaves included."""
  return jax.tree.map(lambda p: jnp.full_like(p, 0.5) + 0.1 * jnp.abs(p), params)


def test_is_frozen():
  tree = tiny_params()
  frozen = {path for path, _ in jax.tree_util.tree_leaves_with_path(tree)
            if optim.is_frozen(path)}
  names = {tuple(k.key for k in path) for path in frozen}
  assert names == set(FROZEN)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps_trainable_and_never_frozen_params(name):
  cfg = Config(optimizer=name, learning_rate=0.1)
  config.check(cfg)
  tx = optim.make(cfg, total_steps=10)
  params = tiny_params()
  before = jax.tree.map(np.asarray, params)
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(_grads(params), state, params)
    params = optax.apply_updates(params, updates)
    for path in FROZEN:
      assert np.all(np.asarray(_get(updates, path)) == 0.0), path
  for path in TRAINABLE:
    new, old = np.asarray(_get(params, path)), _get(before, path)
    assert np.all(np.isfinite(new)), (name, path)
    assert np.all(new != old), f"{name}: {'/'.join(path)} did not move"
    # A positive gradient moves every optimizer downhill.
    assert np.all(new < old), f"{name}: {'/'.join(path)} went uphill"
  for path in FROZEN:
    np.testing.assert_array_equal(_get(params, path), _get(before, path))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_row_optimizer(name):
  tx = optim.make_rows(Config(optimizer=name, learning_rate=0.1), total_steps=10)
  rows = jnp.ones((3, 2))
  updates, _ = tx.update(jnp.ones((3, 2)), tx.init(rows), rows)
  assert bool(jnp.all(updates < 0))


def test_unknown_optimizer_is_an_error():
  with pytest.raises(ValueError, match="nope"):
    optim.base_optimizer("nope", 0.1)


def test_sgd_step_is_learning_rate_times_gradient():
  tx = optim.make(Config(optimizer="sgd", learning_rate=0.1), total_steps=10)
  params = tiny_params()
  updates, _ = tx.update(_grads(params), tx.init(params), params)
  np.testing.assert_allclose(updates["dense"]["kernel"],
                             -0.1 * np.asarray(_grads(params)["dense"]["kernel"]), rtol=1e-6)


# --- schedule --------------------------------------------------------------------------


def test_constant_schedule():
  s = optim.schedule(Config(learning_rate=0.3, lr_schedule="constant"), total_steps=10)
  for t in (0, 1, 5, 10, 100):
    assert float(s(t)) == pytest.approx(0.3)


def test_cosine_schedule_with_warmup():
  lr, warm, total = 0.1, 4, 20
  s = optim.schedule(Config(learning_rate=lr, lr_schedule="cosine", warmup_steps=warm),
                     total_steps=total)
  values = np.array([float(s(t)) for t in range(total + 1)])
  assert values[0] == 0.0
  assert values[warm] == pytest.approx(lr, rel=1e-6)
  assert values.max() == pytest.approx(lr, rel=1e-6)
  assert np.all(np.diff(values[:warm + 1]) > 0), "warm-up rises linearly"
  np.testing.assert_allclose(values[:warm + 1], np.linspace(0, lr, warm + 1), rtol=1e-5)
  assert np.all(np.diff(values[warm:]) < 0), "cosine decays after warm-up"
  assert values[total] == pytest.approx(0.0, abs=1e-7)
  # Half-way through the decay, cosine is at half the peak.
  assert values[warm + (total - warm) // 2] == pytest.approx(lr / 2, rel=1e-5)


def test_constant_schedule_with_warmup():
  s = optim.schedule(Config(learning_rate=1.0, warmup_steps=2), total_steps=10)
  np.testing.assert_allclose([float(s(t)) for t in range(5)], [0.0, 0.5, 1.0, 1.0, 1.0])


def test_make_uses_the_schedule():
  # With warm-up, sgd's very first update is zero (lr(0) == 0) and the next is lr(1) * g.
  cfg = Config(optimizer="sgd", learning_rate=0.1, lr_schedule="cosine", warmup_steps=2)
  tx = optim.make(cfg, total_steps=10)
  params = {"w": jnp.array([1.0, 2.0])}
  g = {"w": jnp.array([1.0, -1.0])}
  state = tx.init(params)
  u0, state = tx.update(g, state, params)
  u1, state = tx.update(g, state, params)
  np.testing.assert_array_equal(u0["w"], [0.0, 0.0])
  np.testing.assert_allclose(u1["w"], [-0.05, 0.05], rtol=1e-6)


# --- clipping --------------------------------------------------------------------------


def _global_norm(tree):
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                           for x in jax.tree.leaves(tree))))


GRADS = {"a": jnp.array([3.0, 0.0]), "b": {"c": jnp.array([[0.0], [4.0]])}}   # norm 5


def test_clip_scales_to_the_limit_when_above_it():
  out = optim.clip_by_global_norm(GRADS, 1.0)
  assert _global_norm(out) == pytest.approx(1.0, rel=1e-6)
  np.testing.assert_allclose(out["a"], [0.6, 0.0], rtol=1e-6)
  np.testing.assert_allclose(out["b"]["c"], [[0.0], [0.8]], rtol=1e-6)


@pytest.mark.parametrize("limit", [5.0, 10.0, 1e6])
def test_clip_leaves_gradients_at_or_below_the_limit_unchanged(limit):
  out = optim.clip_by_global_norm(GRADS, limit)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(GRADS)):
    np.testing.assert_array_equal(a, b)


def test_clip_zero_is_off():
  big = jax.tree.map(lambda g: g * 1000, GRADS)
  out = optim.clip_by_global_norm(big, 0.0)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(big)):
    np.testing.assert_array_equal(a, b)


def test_clip_of_zero_gradients_is_finite():
  zeros = jax.tree.map(jnp.zeros_like, GRADS)
  out = optim.clip_by_global_norm(zeros, 1.0)
  for a in jax.tree.leaves(out):
    np.testing.assert_array_equal(a, np.zeros_like(a))


# --- config checks on the optimisation flags ------------------------------------------


def test_defaults_and_every_optimizer_pass_the_check():
  config.check(Config())
  for name in OPTIMIZERS:
    config.check(Config(optimizer=name, learning_rate=0.1, lr_schedule="cosine",
                        warmup_steps=3, grad_clip=1.0))


def test_check_rejects_unknown_optimizer_listing_the_choices():
  with pytest.raises(ConfigError) as e:
    config.check(Config(optimizer="nope"))
  msg = str(e.value)
  assert msg.startswith("--optimizer=nope")
  for name in OPTIMIZERS:
    assert name in msg


def test_check_rejects_zero_learning_rate():
  with pytest.raises(ConfigError) as e:
    config.check(Config(learning_rate=0))
  msg = str(e.value)
  assert msg.startswith("--learning_rate=0")
  assert "> 0" in msg


def test_check_rejects_momentum_of_one_and_a_half():
  with pytest.raises(ConfigError) as e:
    config.check(Config(momentum=1.5))
  msg = str(e.value)
  assert msg.startswith("--momentum=1.5")
  assert "<=" in msg


@pytest.mark.parametrize("kw, flag", [
    (dict(lr_schedule="linear"), "lr_schedule"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(grad_clip=-0.5), "grad_clip"),
    (dict(momentum=-0.1), "momentum"),
])
def test_check_names_the_flag(kw, flag):
  with pytest.raises(ConfigError, match=f"^--{flag}="):
    config.check(Config(**kw))
