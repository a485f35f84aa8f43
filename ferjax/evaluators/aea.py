"""Both evaluation modes of an AEA model (`aea_eval_modes` in the result).

`prepare` computes the train-set mean of the pooled features, mu `[D]` (eval
preprocessing, the current model in `code_faithful` mode, one pass over the
train split), stores it in the model's `FeatureMean` variable, so the model
state the run keeps, and hence every later checkpoint, carries it, and
returns the model in its configured eval mode. It runs at every evaluation
(every `eval_every_epochs` and at the end of training).

The result holds the classification metrics of `code_faithful` (each eval batch's own mean)
and `batch_independent` (mu); the last evaluation adds `batch_shuffled`: the
batch-mean predictions over the eval split in `shuffle_seeds` random orders,
since in file order an eval batch can be mostly one class and its mean then
carries label information.
"""

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np
from flax import nnx

from ferjax.evaluators.classification import split_metrics
from ferjax.evaluators.registry import EvalContext
from ferjax.models import aea

MODES = ("code_faithful", "batch_independent")


class AEAModes:
  """Metrics of each AEA eval mode (module docstring)."""

  needs = ()

  def __init__(self, shuffle_seeds: Sequence[int]):
    self.shuffle_seeds = tuple(int(seed) for seed in shuffle_seeds)
    self._variants = {}

  def prepare(self, context: EvalContext):
    """Stores mu in the model state; returns (graphdef, state) of the configured mode."""
    model = nnx.merge(context.graphdef, context.model_state)
    if not isinstance(model, aea.AEAClassifier):
      raise ValueError("config.evals.aea needs a model with config.model.aea.enabled=True")
    configured = model.aea.eval_mode
    model.set_eval_mode("code_faithful")
    graphdef, state = nnx.split(model)
    features = context.predict(graphdef, state, context.train_split,
                               ("backbone_features",))["backbone_features"]
    model.set_fixed_mean(features.astype(np.float64).mean(axis=0))
    for mode in MODES:
      model.set_eval_mode(mode)
      self._variants[mode] = nnx.split(model)
    return self._variants[configured]

  def __call__(self, context: EvalContext, predictions: dict) -> dict:
    del predictions  # Each mode predicts the eval split itself.
    modes = {mode: split_metrics(context.predict(*self._variants[mode], context.eval_split),
                                 context.class_names) for mode in MODES}
    if context.final:
      modes["batch_shuffled"] = self._shuffled(context)
    return {"aea_eval_modes": modes}

  def _shuffled(self, context: EvalContext) -> dict:
    """{war, uar: mean over seeds; war_std, uar_std: sample std; *_per_seed; seeds}."""
    split = context.eval_split
    per_seed = []
    for seed in self.shuffle_seeds:
      order = np.random.default_rng(seed).permutation(len(split))
      shuffled = dataclasses.replace(split, positions=split.positions[order])
      per_seed.append(split_metrics(
          context.predict(*self._variants["code_faithful"], shuffled), context.class_names))
    report = {"seeds": list(self.shuffle_seeds)}
    for name in ("war", "uar"):
      values = np.asarray([m[name] for m in per_seed])
      report.update({name: float(values.mean()), f"{name}_std": float(values.std(ddof=1)),
                     f"{name}_per_seed": values.tolist()})
    return report


def from_config(settings: ml_collections.ConfigDict) -> AEAModes:
  """`config.evals.aea.shuffle_seeds`: the orders of `batch_shuffled` (default 0..4)."""
  return AEAModes(settings.get("shuffle_seeds", (0, 1, 2, 3, 4)))
