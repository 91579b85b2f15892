"""Classification losses per example, and the prediction rule that goes with each."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def num_outputs(loss: str, num_classes: int) -> int:
  """Binary sigmoid cross-entropy uses one logit; the others one logit per class."""
  return 1 if loss == "sigmoid_xent" else num_classes


def per_example(loss: str, logits_BxK, labels_B):
  if loss == "softmax_xent":
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)
  if loss == "sigmoid_xent":
    return optax.sigmoid_binary_cross_entropy(logits_BxK[:, 0], labels_B.astype(logits_BxK.dtype))
  if loss == "hinge":
    return multiclass_hinge(logits_BxK, labels_B)
  raise ValueError(f"unknown loss {loss!r}")


def multiclass_hinge(logits_BxK, labels_B, margin: float = 1.0):
  """Weston-Watkins margin loss, averaged over classes as Torch's MultiMarginCriterion:

  sum_{j != y} max(0, margin - s_y + s_j) / K.
  """
  K = logits_BxK.shape[-1]
  s_y = jnp.take_along_axis(logits_BxK, labels_B[:, None], axis=-1)
  hinge = jnp.maximum(0.0, margin - s_y + logits_BxK)
  hinge = jnp.where(jnp.arange(K)[None, :] == labels_B[:, None], 0.0, hinge)
  return hinge.sum(axis=-1) / K


def predict(loss: str, logits_BxK):
  if loss == "sigmoid_xent":
    return (logits_BxK[:, 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits_BxK, axis=-1).astype(jnp.int32)
