"""Weight penalties and Kim's max-norm constraint.

Penalties apply to weight matrices only: parameters named `kernel` (dense and
convolution weights). Biases and embedding tables are never penalised.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def weight_matrices(params) -> list:
  """Every `kernel` leaf of a params pytree."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return [x for path, x in leaves if _name(path[-1]) == "kernel"]


def _name(key) -> str:
  return str(getattr(key, "key", getattr(key, "name", key)))


def l1(params):
  return sum(jnp.sum(jnp.abs(w)) for w in weight_matrices(params))


def l2(params):
  """Squared Frobenius norm summed over weight matrices."""
  return sum(jnp.sum(jnp.square(w)) for w in weight_matrices(params))


def frobenius(params):
  """Frobenius norm (not squared) summed over weight matrices."""
  return sum(_safe_norm(w) for w in weight_matrices(params))


def _safe_norm(w):
  """||w||_F with gradient 0 (a valid subgradient) at w = 0 instead of NaN."""
  sq = jnp.sum(jnp.square(w))
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def penalty(params, *, l1_weight=0.0, l2_weight=0.0, frobenius_weight=0.0):
  total = jnp.zeros((), jnp.float32)
  if l1_weight:
    total += l1_weight * l1(params)
  if l2_weight:
    total += l2_weight * l2(params)
  if frobenius_weight:
    total += frobenius_weight * frobenius(params)
  return total


def max_norm(params, limit: float, layer: str = "output"):
  """Rescales each column (output unit) of params[layer]['kernel'] to L2 norm <= limit.

  Kim (2014) applies this to the softmax layer after every update with limit 3.
  """
  if not limit or layer not in params:
    return params
  w = params[layer]["kernel"]
  norms = jnp.sqrt(jnp.sum(jnp.square(w), axis=0, keepdims=True))
  scale = jnp.minimum(1.0, limit / jnp.maximum(norms, 1e-12))
  layer_params = dict(params[layer], kernel=w * scale)
  return {**params, layer: layer_params}
