"""Softmax cross-entropy on hard labels (with optional label smoothing)."""

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from ferjax.objectives import registry as objective_registry


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` [B] over the rows where `mask` [B] is True (0 if none)."""
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


class CrossEntropy(nnx.Module):
  """L = mean_b CE(softmax(logits_b), smooth(t_b)) over valid rows.

  t_b = onehot(y_b), or the batch's `soft_target` `[B, K]` when the input mixes
  examples (ferjax.mix); smooth(t) = (1 - s) t + s / K.
  """

  def __init__(self, num_classes: int, label_smoothing: float = 0.0):
    self.num_classes = num_classes
    self.label_smoothing = label_smoothing

  def __call__(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
               step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    del step
    logits = outputs["logits"].astype(jnp.float32)
    targets = batch.get("soft_target")
    if targets is None:
      targets = jax.nn.one_hot(batch["label"], self.num_classes)
    targets = optax.smooth_labels(targets, self.label_smoothing)
    loss = masked_mean(optax.softmax_cross_entropy(logits, targets), batch["mask"])
    return loss, {}

  def update(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
             step: jax.Array) -> None:
    """Plain cross-entropy has no state to update."""

  def predict(self, outputs: dict[str, jax.Array]) -> jax.Array:
    return outputs["logits"]


def from_config(objective_config: ml_collections.ConfigDict,
                context: objective_registry.TrainContext, *,
                rngs: nnx.Rngs) -> CrossEntropy:
  """CrossEntropy from `config.objective.label_smoothing` and `context.num_classes`."""
  del rngs
  return CrossEntropy(context.num_classes, objective_config.get("label_smoothing", 0.0))
