"""Soft label mining (SLM, Ming et al., ACCV 2022), as in the official code.

Every training example i owns label logits z_i in R^K (a float32 table Z of
shape [N, K], keyed by the record's position in the train split,
`batch["index"]`); its soft label is q_i = softmax(z_i). The network is trained
only with the soft-target cross-entropy

  L_cls = (1/B) sum_b sum_c -q_bc log softmax(f_b)_c,

and after each optimiser step the table takes one plain gradient step (size
lam, no momentum) on

  L_lab = u(t) (1/B) sum_b CE(z_b -> p_b) + d(t) (1/B) sum_b CE(z_b -> onehot(y_b)),

with p = softmax(f) from the same pre-update logits, in closed form

  z_b <- z_b - (lam/B) [u(t) (softmax(z_b) - p_b) + d(t) (softmax(z_b) - onehot(y_b))].

B is the true (unpadded) global batch size, so the last partial batch of each
epoch takes a larger step, as in the reference. Each gradient row sums to
zero, so the row sums of Z never change.

With gradient accumulation (n micro-batches per optimiser update) the table
is updated after every micro-batch, with B = n x the micro-batch's size and
t = the update count: within one update the parameters do not change and the
micro-batches hold distinct examples (the loop never splits an update across
epochs), and each row's step reads only its own row and its own prediction,
so this is exactly the update of the n-times-larger batch. Per-example
targets make SLM refuse mixed (Mixup/CutMix) inputs.
"""

import csv
import io
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from ferjax.data import labels as labels_lib
from ferjax.objectives import registry as objective_registry


class LabelTable(nnx.Variable):
  """Per-example label logits Z `[N, K]` float32: method state, not a parameter."""


def initial_label_logits(labels: np.ndarray, num_classes: int, k: float = 5.0,
                         p: float = 0.97) -> np.ndarray:
  """Z0 `[N, K]` float32 with softmax(Z0_i) = p on y_i and (1-p)/(K-1) elsewhere.

  z_i[y_i] = k and z_i[j != y_i] = k + log((1-p)/p) - log(K-1): label smoothing
  written in logit space, with k setting the logit scale. A label of -1 marks
  a record the train split filters out (e.g. contempt in a 7-class view); its
  row is all zeros and never read.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f"train labels must be a non-empty 1-D array, got shape {labels.shape}")
  if labels.min() < -1 or labels.max() >= num_classes:
    raise ValueError(f"train labels must lie in [0, {num_classes}) (or -1 for filtered "
                     f"records), got [{labels.min()}, {labels.max()}]")
  if not 0.0 < p < 1.0:
    raise ValueError(f"config.objective.p must lie in (0, 1), got {p}")
  off = k + math.log((1.0 - p) / p) - math.log(num_classes - 1)
  table = np.full((labels.size, num_classes), off, np.float64)
  rows = np.flatnonzero(labels >= 0)
  table[rows, labels[rows]] = k
  table[labels < 0] = 0.0
  return table.astype(np.float32)


def ramp_u(t: jax.Array | int, steps_per_epoch: int, alpha: float, beta: int) -> jax.Array:
  """Weight on "match the prediction": exp(-(alpha - t/(beta n_s))^2) if t <= beta n_s, else 1."""
  t = jnp.asarray(t)
  boundary = beta * steps_per_epoch
  rising = jnp.exp(-(alpha - t.astype(jnp.float32) / boundary) ** 2)
  return jnp.where(t <= boundary, rising, 1.0)


def ramp_d(t: jax.Array | int, steps_per_epoch: int, alpha: float, beta: int) -> jax.Array:
  """Weight on "stay at the hard label": 1 if t <= beta n_s, else exp(-(alpha - beta n_s/t)^2)."""
  t = jnp.asarray(t)
  boundary = beta * steps_per_epoch
  # max(t, 1) only keeps the unselected branch finite at t = 0.
  decaying = jnp.exp(-(alpha - boundary / jnp.maximum(t, 1).astype(jnp.float32)) ** 2)
  return jnp.where(t <= boundary, 1.0, decaying)


def _valid_mask(batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(mask [B] float32, true batch size sum(mask), at least 1)."""
  mask = batch["mask"].astype(jnp.float32)
  return mask, jnp.maximum(jnp.sum(mask), 1.0)


class SoftLabelMining(nnx.Module):
  """Soft-target cross-entropy on mined labels plus their closed-form update.

  `step` is the 0-based global iteration t of the current train step (the
  number of optimiser steps taken before it); `steps_per_epoch` counts
  optimiser steps, and each optimiser step is `accumulate_steps` micro-batches.
  """

  needs_hard_labels = True

  def __init__(self, train_labels: np.ndarray, num_classes: int, *, steps_per_epoch: int,
               k: float = 5.0, p: float = 0.97, lam: float = 200.0, alpha: float = 1.6,
               beta: int = 7, export: bool = False, accumulate_steps: int = 1):
    if steps_per_epoch <= 0:
      raise ValueError(f"SLM needs steps_per_epoch > 0, got {steps_per_epoch}")
    self.num_classes = num_classes
    self.steps_per_epoch = steps_per_epoch
    self.lam = lam
    self.alpha = alpha
    self.beta = beta
    self.export = export
    self.accumulate_steps = accumulate_steps
    self.table = LabelTable(jnp.asarray(initial_label_logits(train_labels, num_classes, k, p)))

  def _rows(self, batch: dict[str, jax.Array]) -> jax.Array:
    """Z[index] `[B, K]` float32 (padded rows read an arbitrary valid row)."""
    index = jnp.clip(batch["index"], 0, self.table.shape[0] - 1)
    return self.table[...][index]

  def __call__(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
               step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_cls with q = softmax(Z[index]) as read before this step's update."""
    del step
    mask, batch_size = _valid_mask(batch)
    q = jax.nn.softmax(jax.lax.stop_gradient(self._rows(batch)))
    log_probs = jax.nn.log_softmax(outputs["logits"].astype(jnp.float32))
    loss = jnp.sum(-jnp.sum(q * log_probs, axis=-1) * mask) / batch_size
    relabelled = jnp.sum((jnp.argmax(q, axis=-1) != batch["label"]) * mask) / batch_size
    return loss, {"slm_relabelled": relabelled}

  def update(self, outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
             step: jax.Array) -> None:
    """One closed-form step on L_lab, written back to Z[index] for valid rows only."""
    mask, batch_size = _valid_mask(batch)
    p = jax.nn.softmax(jax.lax.stop_gradient(outputs["logits"]).astype(jnp.float32))
    onehot = jax.nn.one_hot(batch["label"], self.num_classes, dtype=jnp.float32)
    u = ramp_u(step, self.steps_per_epoch, self.alpha, self.beta)
    d = ramp_d(step, self.steps_per_epoch, self.alpha, self.beta)
    z = self._rows(batch)
    q = jax.nn.softmax(z)
    update_batch_size = self.accumulate_steps * batch_size
    z_new = z - (self.lam / update_batch_size) * (u * (q - p) + d * (q - onehot))
    # Padded rows scatter out of range and are dropped, so they never collide
    # with a real row that shares their (arbitrary) index.
    target = jnp.where(mask > 0, batch["index"], self.table.shape[0])
    self.table[...] = self.table[...].at[target].set(z_new, mode="drop")

  def predict(self, outputs: dict[str, jax.Array]) -> jax.Array:
    return outputs["logits"]

  def on_train_end(self, workdir: str, context: objective_registry.TrainContext) -> None:
    """With `export`, writes the mined labels to workdir/soft_labels.{npz,csv}.

    Every process reads the split's ids so that all reach the shutdown barrier
    together; only process 0 writes.
    """
    if not self.export:
      return
    ids, labels = context.ids, context.labels
    if jax.process_index() > 0:
      return
    paths = export_soft_labels(np.asarray(self.table[...]), ids, labels,
                               epath.Path(workdir) / "soft_labels")
    logging.info("Mined soft labels written to %s", ", ".join(paths))


def from_config(objective_config: ml_collections.ConfigDict,
                context: objective_registry.TrainContext, *, rngs: nnx.Rngs) -> SoftLabelMining:
  """SLM from `config.objective` (`k`, `p`, `lam`, `alpha`, `beta`, `steps_per_epoch`,
  `export_soft_labels`) and the train split's hard labels `context.labels`.

  n_s is the loop's `context.steps_per_epoch` (ceil(N/B) without
  drop_remainder) unless a positive `objective.steps_per_epoch` overrides it.
  """
  del rngs
  steps_per_epoch = objective_config.get("steps_per_epoch", 0) or context.steps_per_epoch
  return SoftLabelMining(
      context.labels, context.num_classes, steps_per_epoch=int(steps_per_epoch),
      k=objective_config.k, p=objective_config.p, lam=objective_config.lam,
      alpha=objective_config.alpha, beta=objective_config.beta,
      export=objective_config.get("export_soft_labels", False),
      accumulate_steps=context.accumulate_steps)


def export_soft_labels(table: np.ndarray, ids: Sequence[str], labels: np.ndarray,
                       path: str) -> tuple[str, str]:
  """Writes the mined labels to `path`.npz and `path`.csv; returns both paths.

  The npz holds `id` [M], `label` [M] (hard), `logits` = Z [M, K] and
  `soft_label` = softmax(Z) [M, K]. The CSV has one row per example:
  id, hard label name, mined (argmax) label name, then softmax(Z) per class.
  Rows with label -1 (records the train split filters out) are left out.
  """
  table = np.asarray(table, np.float64)
  labels = np.asarray(labels)
  if not table.shape[0] == len(ids) == labels.shape[0]:
    raise ValueError(f"export_soft_labels: table has {table.shape[0]} rows, "
                     f"{len(ids)} ids, {labels.shape[0]} labels")
  keep = labels >= 0
  table, labels = table[keep], labels[keep]
  ids = [example_id for example_id, kept in zip(ids, keep) if kept]
  names = labels_lib.class_names(table.shape[1])
  shifted = np.exp(table - table.max(axis=1, keepdims=True))
  soft = shifted / shifted.sum(axis=1, keepdims=True)
  base = str(path).removesuffix(".npz").removesuffix(".csv")
  npz_path, csv_path = epath.Path(base + ".npz"), epath.Path(base + ".csv")
  npz_path.parent.mkdir(parents=True, exist_ok=True)
  with npz_path.open("wb") as f:
    np.savez(f, id=np.asarray(ids, dtype=str), label=labels,
             logits=table.astype(np.float32), soft_label=soft.astype(np.float32))
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(("id", "label", "mined_label") + names)
  for i, example_id in enumerate(ids):
    writer.writerow([example_id, names[labels[i]], names[int(soft[i].argmax())]]
                    + [f"{v:.6f}" for v in soft[i]])
  csv_path.write_text(text.getvalue())
  return str(npz_path), str(csv_path)
