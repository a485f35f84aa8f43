"""An exponential moving average (EMA) of the model's weights, kept beside them.

After every optimizer update, for every floating-point variable w of the
model (parameters and BatchNorm statistics alike),

  ema(w) <- decay * ema(w) + (1 - decay) * w,

starting from the initial (or `init_from`) weights; variables that are not
floating point are copied. With gradient accumulation the EMA moves once per
update, not once per micro-batch. The EMA lives in the train state (the
checkpoint's `ema` entry), so it is saved and resumed with the rest; it is
evaluated at every evaluation as `ema/war`, `ema/uar`, ... and can replace the
weights for eval-only runs and prediction.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ferjax import errors


def enabled(ema_config: ml_collections.ConfigDict) -> bool:
  return ema_config.decay > 0


def check_config(ema_config: ml_collections.ConfigDict) -> None:
  if not 0.0 <= ema_config.decay < 1.0:
    raise errors.UserError(f"config.ema.decay must lie in [0, 1) (0 = no EMA), got "
                           f"{ema_config.decay}")


def init(model_state):
  """The EMA at step 0: a copy of the model's variables (a pytree like `model_state`)."""
  return jax.tree.map(jnp.array, model_state)


def update(ema_state, model_state, decay: float, updated: jax.Array | bool = True):
  """One EMA step towards `model_state`, taken only where `updated` is True.

  Args:
    ema_state: the EMA, a pytree like `model_state`.
    model_state: the model's variables after this train step.
    decay: the EMA decay in [0, 1).
    updated: whether the optimizer changed the weights in this train step
      (False between the micro-batches of an accumulated update).
  """

  def step(average, current):
    if not jnp.issubdtype(current.dtype, jnp.floating):
      return current
    moved = optax.incremental_update(current, average, step_size=1.0 - decay)
    return jnp.where(updated, moved, average).astype(average.dtype)

  return jax.tree.map(step, ema_state, model_state)


def metrics_of(eval_metrics: dict) -> dict:
  """An evaluation's metrics without its bookkeeping (step, split, dataset, class names)."""
  return {k: v for k, v in eval_metrics.items()
          if k not in ("step", "split", "dataset", "class_names")}
