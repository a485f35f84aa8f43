"""An objective with per-example state: targets mixed with an EMA of past predictions.

Each training example i keeps T_i `[K]`, an exponential moving average of its
predicted distribution (initialised to uniform). With w = `weight`:

  L = mean_b CE(softmax(f_b) -> (1 - w) onehot(y_b) + w T_{i_b})   (valid rows)
  after the step: T_i <- m T_i + (1 - m) softmax(f_i)  (m = `momentum`, valid rows)

`on_train_end` writes T to workdir/ema_targets.npy.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax import nnx

from ferjax.objectives import registry as objective_registry


class TargetTable(nnx.Variable):
  """T `[N, K]`: per-example EMA of the predicted distribution (state, not a parameter)."""


class EMATargets(nnx.Module):

  def __init__(self, num_records: int, num_classes: int, *, momentum: float, weight: float):
    self.num_classes = num_classes
    self.momentum = momentum
    self.weight = weight
    self.table = TargetTable(jnp.full((num_records, num_classes), 1.0 / num_classes))

  def __call__(self, outputs, batch, step):
    del step
    targets = ((1.0 - self.weight) * jax.nn.one_hot(batch["label"], self.num_classes)
               + self.weight * self.table[...][batch["index"]])
    losses = optax.softmax_cross_entropy(outputs["logits"].astype(jnp.float32), targets)
    mask = batch["mask"].astype(jnp.float32)
    return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0), {}

  def update(self, outputs, batch, step):
    del step
    rows = self.table[...][batch["index"]]
    moved = self.momentum * rows + (1.0 - self.momentum) * jax.nn.softmax(
        outputs["logits"].astype(jnp.float32))
    # Padded rows scatter out of range and are dropped.
    target = jnp.where(batch["mask"], batch["index"], self.table.shape[0])
    self.table[...] = self.table[...].at[target].set(moved, mode="drop")

  def predict(self, outputs):
    return outputs["logits"]

  def on_train_end(self, workdir: str, context: objective_registry.TrainContext) -> None:
    del context
    if jax.process_index() == 0:
      with (epath.Path(workdir) / "ema_targets.npy").open("wb") as f:
        np.save(f, np.asarray(self.table[...]))


def from_config(objective_config: ml_collections.ConfigDict,
                context: objective_registry.TrainContext, *, rngs: nnx.Rngs) -> EMATargets:
  del rngs
  return EMATargets(context.num_records, context.num_classes,
                    momentum=objective_config.momentum, weight=objective_config.weight)
