"""Average expression anchoring (AEA, Ming et al., ACCV 2022) for any backbone.

AEA adds the batch-average feature to every pooled feature before the
classifier: h_b = x_b + w * mean_{b' valid} x_{b'}, with a learnable w `[D]`
initialised to ones. The mean is not detached, so gradients reach every
sample of the batch through it. AEA has no loss of its own.

In training the mean is always the current (global, unpadded) batch mean.
At evaluation it is chosen by `eval_mode`:
  * `code_faithful` (alias `batch_official`): the mean of the current
    eval batch, as the reference code does; predictions depend on the batch.
  * `batch_independent` (alias `fixed_mean`): a stored mean mu of the
    train-set pooled features; predictions are per image. mu is a
    `FeatureMean` variable (not a parameter), so the model state and its
    checkpoints carry it; the `aea` evaluator (`ferjax.evaluators.aea`)
    computes it at every evaluation with the current model.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ferjax.models import precision, torch_layers
from ferjax.models.dtypes import compute_dtype

EVAL_MODES: dict[str, str] = {
    "code_faithful": "code_faithful",
    "batch_official": "code_faithful",
    "batch_independent": "batch_independent",
    "fixed_mean": "batch_independent",
}


def canonical_eval_mode(mode: str) -> str:
  """Maps an eval-mode name or its alias to `code_faithful` | `batch_independent`."""
  if mode not in EVAL_MODES:
    raise ValueError(f"config.model.aea.eval_mode {mode!r} is not one of "
                     f"{', '.join(EVAL_MODES)}")
  return EVAL_MODES[mode]


class FeatureMean(nnx.Variable):
  """The stored train-set mean of the pooled features `[D]` (not trained)."""


def masked_batch_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """mean over rows b with mask_b of x `[B, D]` -> `[D]`, accumulated in float32."""
  x = x.astype(jnp.float32)
  if mask is None:
    return jnp.mean(x, axis=0)
  weights = mask.astype(jnp.float32)[:, None]
  return jnp.sum(x * weights, axis=0) / jnp.maximum(jnp.sum(weights), 1.0)


class AverageExpressionAnchoring(nnx.Module):
  """h = x + w * xbar for pooled features x `[B, D]`; xbar per `eval_mode` (module doc)."""

  def __init__(self, dim: int, *, eval_mode: str = "code_faithful"):
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.mean = FeatureMean(jnp.zeros((dim,), jnp.float32))
    self.eval_mode = canonical_eval_mode(eval_mode)
    self.mixed = precision.float32_gradients()

  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """`mask` `[B]` bool marks real rows (None: all rows are real)."""
    if train or self.eval_mode == "code_faithful":
      anchor = masked_batch_mean(x, mask)
    else:
      anchor = self.mean[...]
    # w's gradient sums over the batch: in float32 where chosen (ferjax.models.precision).
    return precision.add_param_term(x, self.weight[...] * anchor, mixed=self.mixed)


class AEAClassifier(nnx.Module):
  """backbone -> pooled features x -> AEA -> fresh Linear(D, K).

  `backbone(x, train=)` must return a dict with `features` `[B, D]`; build it
  headless (`from_config(..., headless=True)`) so that no dead classifier is
  computed. D is `feature_dim`, else the backbone's `num_features`. Returns the
  backbone's outputs with `logits` `[B, K]`, `features` = h `[B, D]` (the
  classifier input) and `backbone_features` = x `[B, D]`.
  """

  takes_mask = True

  def __init__(self, backbone: nnx.Module, num_classes: int, *, feature_dim: int | None = None,
               eval_mode: str = "code_faithful", dtype: Any = jnp.float32, rngs: nnx.Rngs):
    feature_dim = feature_dim or getattr(backbone, "num_features", None)
    if not isinstance(feature_dim, int):
      raise ValueError(f"AEA: {type(backbone).__name__} has no `num_features`: pass feature_dim")
    self.backbone = backbone
    self.aea = AverageExpressionAnchoring(feature_dim, eval_mode=eval_mode)
    self.fc = torch_layers.linear(feature_dim, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool,
               mask: jax.Array | None = None) -> dict[str, jax.Array]:
    outputs = dict(self.backbone(x, train=train))
    pooled = outputs["features"]
    h = self.aea(pooled, train=train, mask=mask)
    outputs.update(logits=self.fc(h), features=h, backbone_features=pooled)
    return outputs

  def set_eval_mode(self, mode: str) -> None:
    """Switches evaluation between `code_faithful` and `batch_independent` (or aliases).

    Raises:
      ValueError: for `batch_independent` before `set_fixed_mean` was called.
    """
    mode = canonical_eval_mode(mode)
    if mode == "batch_independent" and not bool(jnp.any(self.aea.mean[...] != 0)):
      raise ValueError("AEA eval_mode 'batch_independent' needs the train-set feature mean: "
                       "call set_fixed_mean(...) first")
    self.aea.eval_mode = mode

  def set_fixed_mean(self, mean: np.ndarray | jax.Array) -> None:
    """Stores mu `[D]` for the `batch_independent` eval mode."""
    mean = jnp.asarray(mean, jnp.float32)
    if mean.shape != self.aea.mean.shape:
      raise ValueError(f"AEA fixed mean must have shape {self.aea.mean.shape}, got {mean.shape}")
    self.aea.mean[...] = mean


def wrap_from_config(backbone: nnx.Module, model_config: ml_collections.ConfigDict,
                     num_classes: int, *, rngs: nnx.Rngs) -> AEAClassifier:
  """AEAClassifier around `backbone` from `config.model` (`dtype`, `aea.eval_mode`)."""
  return AEAClassifier(backbone, num_classes, eval_mode=model_config.aea.eval_mode,
                       dtype=compute_dtype(model_config.dtype), rngs=rngs)
