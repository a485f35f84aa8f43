"""Center cosine loss (CCL): cross-entropy plus a cosine-margin loss to class centers.

Reconstruction of the loss of Wen et al. (Meas. Sci. Technol. 2024), see
docs/methods/msfe.md, 'Center cosine loss'. With f̂ = f / max(|f|, eps), ĉ_j likewise and
cos_ij = <f̂_i, ĉ_j>, over the B_v valid rows of the global batch:

  margin:      L_CCL = mean_i CE(softmax(s * (cos_i - m * onehot(y_i))), y_i)
  intra_inter: L_CCL = mean_i (1 - cos_{i,y_i})
                       + gamma_c / (K (K - 1)) * sum_{j != k} (1 + <ĉ_j, ĉ_k>)

  L = CE(logits, y) + lambda * L_CCL + mu * mean_i (1 - cos_{i,y_i})
  (L = L_CCL + mu * ... without the CE head).

It acts on `outputs["features"]` of any backbone. Centers are either an
`nnx.Param` named `centers` trained by the optimiser (`grad`; the config
excludes it from weight decay with `optimizer.no_decay = ("centers",)`) or a
`CenterVariable` moved towards the batch features after every step (`ema`).

With gradient accumulation (n micro-batches per optimiser update), EMA centers
move once per update, from the class counts and feature sums of all n
micro-batches: every micro-batch's loss then reads the centers the n-times-larger
batch would read, and the move equals that batch's. (Moving after each
micro-batch would make the later micro-batches' losses see other centers, and
the 1 + n_j damping depends on the batch size.) The centers need one class
per example, so the objective refuses mixed (Mixup/CutMix) inputs.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from ferjax.objectives import registry as objective_registry
from ferjax.objectives.cross_entropy import masked_mean

VARIANTS = ("margin", "intra_inter")
CENTER_UPDATES = ("grad", "ema")
PREDICT_WITH = ("logits", "centers")
EPSILON = 1e-8


class CenterVariable(nnx.Variable):
  """Class centers moved by `CenterCosine.update` (not optimised, checkpointed)."""


class PendingCenterStats(nnx.Variable):
  """Sums over the micro-batches seen so far of an accumulated update (checkpointed)."""


def at_least_float32(x: jax.Array) -> jax.Array:
  """x in float32, or in its own dtype if wider (float64 for gradient checks)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l2_normalize(x: jax.Array, eps: float = EPSILON) -> jax.Array:
  """x / max(|x|, eps) along the last axis, with a finite gradient at x = 0."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def cosine_to_centers(features: jax.Array, centers: jax.Array) -> jax.Array:
  """cos(f_i, c_j) for features `[B, D]` and centers `[K, D]`: `[B, K]`."""
  return jnp.matmul(l2_normalize(features), l2_normalize(centers).T,
                    precision=jax.lax.Precision.HIGHEST)


class CenterCosine(nnx.Module):
  """Cross-entropy on the logits plus the center cosine loss on the features."""

  needs_hard_labels = True

  def __init__(self, num_classes: int, feature_dim: int, *, variant: str = "margin",
               scale: float = 30.0, margin: float = 0.35, weight: float = 0.1,
               pull_weight: float = 0.0, inter_weight: float = 1.0, use_ce_head: bool = True,
               center_update: str = "grad", ema_rate: float = 0.5,
               predict_with: str = "logits", accumulate_steps: int = 1, rngs: nnx.Rngs):
    for name, value, allowed in (("variant", variant, VARIANTS),
                                 ("center_update", center_update, CENTER_UPDATES),
                                 ("predict_with", predict_with, PREDICT_WITH)):
      if value not in allowed:
        raise ValueError(f"objective.ccl.{name} must be one of {allowed}, got {value!r}")
    if not use_ce_head and predict_with != "centers":
      raise ValueError("objective.ccl.use_ce_head=False needs objective.ccl.predict_with="
                       "'centers' (the classifier head is not trained)")
    self.num_classes = num_classes
    self.variant = variant
    self.scale = scale
    self.margin = margin
    self.weight = weight
    self.pull_weight = pull_weight
    self.inter_weight = inter_weight
    self.use_ce_head = use_ce_head
    self.center_update = center_update
    self.ema_rate = ema_rate
    self.predict_with = predict_with
    self.accumulate_steps = accumulate_steps
    centers = jax.random.normal(rngs.params(), (num_classes, feature_dim), jnp.float32)
    if center_update == "grad":
      self.centers = nnx.Param(centers)
    else:
      self.centers = CenterVariable(l2_normalize(centers))
    if center_update == "ema" and accumulate_steps > 1:
      self.pending_counts = PendingCenterStats(jnp.zeros((num_classes, 1), jnp.float32))
      self.pending_sums = PendingCenterStats(jnp.zeros((num_classes, feature_dim), jnp.float32))
      self.pending_batches = PendingCenterStats(jnp.zeros((), jnp.int32))

  def center_values(self) -> jax.Array:
    """The centers `[K, D]`; EMA centers carry no gradient."""
    centers = self.centers[...]
    return centers if self.center_update == "grad" else jax.lax.stop_gradient(centers)

  def center_cosine_loss(self, cosines: jax.Array, onehot: jax.Array,
                         mask: jax.Array) -> jax.Array:
    """L_CCL from cos(f_i, c_j) `[B, K]` and one-hot labels `[B, K]`, over valid rows."""
    if self.variant == "margin":
      logits = self.scale * (cosines - self.margin * onehot)
      return masked_mean(optax.softmax_cross_entropy(logits, onehot), mask)
    intra = masked_mean(1.0 - jnp.sum(cosines * onehot, axis=-1), mask)
    unit = l2_normalize(self.center_values())
    gram = jnp.matmul(unit, unit.T, precision=jax.lax.Precision.HIGHEST)
    k = self.num_classes
    # sum_{j != k} (1 + <c_j, c_k>) = sum_{j,k} (1 + gram) - sum_j (1 + gram_jj).
    inter = (jnp.sum(1.0 + gram) - jnp.sum(1.0 + jnp.diagonal(gram))) / (k * (k - 1))
    return intra + self.inter_weight * inter

  def __call__(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
               step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    del step
    labels, mask = batch["label"], batch["mask"]
    cosines = cosine_to_centers(at_least_float32(outputs["features"]), self.center_values())
    onehot = jax.nn.one_hot(labels, self.num_classes, dtype=cosines.dtype)
    own_cos = jnp.sum(cosines * onehot, axis=-1)
    ccl = self.center_cosine_loss(cosines, onehot, mask)
    pull = masked_mean(1.0 - own_cos, mask)
    metrics = {"ccl_loss": ccl, "own_center_cos": masked_mean(own_cos, mask)}
    if self.use_ce_head:
      ce = masked_mean(optax.softmax_cross_entropy_with_integer_labels(
          at_least_float32(outputs["logits"]), labels), mask)
      metrics["ce_loss"] = ce
      loss = ce + self.weight * ccl
    else:
      loss = ccl
    return loss + self.pull_weight * pull, metrics

  def update(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
             step: jax.Array) -> None:
    """EMA centers: c_j <- normalise(ĉ_j - alpha * sum_{y_i=j} (ĉ_j - f̂_i) / (1 + n_j)).

    Only classes with n_j > 0 valid rows in the global batch move. With
    accumulation, n_j and the feature sums run over the update's micro-batches
    and the centers move after its last one.
    """
    del step
    if self.center_update != "ema":
      return
    features = l2_normalize(at_least_float32(outputs["features"]))
    centers = self.centers[...]
    unit = l2_normalize(centers)
    members = (jax.nn.one_hot(batch["label"], self.num_classes, dtype=features.dtype)
               * batch["mask"].astype(features.dtype)[:, None])                    # [B, K]
    counts = jnp.sum(members, axis=0)[:, None]                                     # [K, 1]
    feature_sums = jnp.matmul(members.T, features, precision=jax.lax.Precision.HIGHEST)
    complete = True
    if self.accumulate_steps > 1:
      counts = counts + self.pending_counts[...]
      feature_sums = feature_sums + self.pending_sums[...]
      seen = self.pending_batches[...] + 1
      complete = seen == self.accumulate_steps
      self.pending_counts[...] = jnp.where(complete, 0.0, counts)
      self.pending_sums[...] = jnp.where(complete, 0.0, feature_sums)
      self.pending_batches[...] = jnp.where(complete, 0, seen)
    delta = (counts * unit - feature_sums) / (1.0 + counts)
    moved = l2_normalize(unit - self.ema_rate * delta)
    self.centers[...] = jnp.where(complete & (counts > 0), moved, centers).astype(centers.dtype)

  def predict(self, outputs: dict[str, jax.Array]) -> jax.Array:
    """Classifier logits, or cos(f, c_j) `[B, K]` with `predict_with='centers'`."""
    if self.predict_with == "centers":
      return cosine_to_centers(at_least_float32(outputs["features"]), self.centers[...])
    return outputs["logits"]


def from_config(objective_config: ml_collections.ConfigDict,
                context: objective_registry.TrainContext, *,
                rngs: nnx.Rngs) -> CenterCosine:
  """Builds the objective from `config.objective.ccl.*` and the context's K and D."""
  ccl = objective_config.ccl
  return CenterCosine(context.num_classes, context.feature_dim, variant=ccl.variant,
                      scale=ccl.scale,
                      margin=ccl.margin, weight=ccl.weight, pull_weight=ccl.pull_weight,
                      inter_weight=ccl.inter_weight, use_ce_head=ccl.use_ce_head,
                      center_update=ccl.center_update, ema_rate=ccl.ema_rate,
                      predict_with=ccl.predict_with, accumulate_steps=context.accumulate_steps,
                      rngs=rngs)
