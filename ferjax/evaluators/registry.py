"""The evaluator plug-ins: what they are given and how `config.evals` picks them.

`config.evals` maps an evaluator name to its settings (a ConfigDict, `{}` for
none); the evaluators run at every evaluation, by name. An evaluator is
built by `builder(settings)` and has

  needs: tuple[str, ...]   per-example keys it reads beyond `label` and
                           `prediction`: model outputs (`features`) or batch
                           metadata (`yaw`); missing ones are an error
  __call__(context, predictions) -> dict   metrics, merged into the eval
                           result (and final_metrics.json); with
                           `context.final` it also writes its reports

and optionally `prepare(context) -> (graphdef, model_state)`, which runs
before the split is predicted and returns the model variant to evaluate (and
the model state the run keeps, e.g. with a newly computed statistic), and
`writes_tensorboard = True` for one whose only output is TensorBoard event
files: a run with `config.tensorboard=False` leaves it out.
"""

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import ml_collections
import numpy as np

_BUILDERS: dict[str, str | Callable[[ml_collections.ConfigDict], Any]] = {
    "classification": "ferjax.evaluators.classification",
    "pose": "ferjax.evaluators.pose",
    "embedding": "ferjax.evaluators.embedding",
    "aea": "ferjax.evaluators.aea",
    "tensorboard": "ferjax.evaluators.tensorboard",
}


class Predict(Protocol):
  def __call__(self, graphdef: Any, model_state: Any, split: Any,
               keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Per-example `label`, `prediction`, batch metadata and outputs[`keys`] over `split`."""


@dataclasses.dataclass
class EvalContext:
  """One evaluation of a model: what every evaluator may read.

  `predict(graphdef, model_state, split, keys)` runs the model on a split
  (`eval_split`, `train_split` or a reordered copy) with eval preprocessing;
  `prediction` is the argmax of the objective's scores. `predictions` holds
  each evaluated split's per-example arrays once `prepare` hooks have run.
  """
  step: int
  final: bool                     # the last evaluation: write reports and plots
  is_writer: bool                 # process 0 writes files
  workdir: str
  dataset_name: str
  class_names: tuple[str, ...]
  eval_split_name: str
  eval_split: Any
  train_split: Any
  graphdef: Any
  model_state: Any
  predict: Predict
  predictions: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


def register(name: str, builder: Callable[[ml_collections.ConfigDict], Any]) -> None:
  """Makes `config.evals[name]` build an evaluator with `builder(settings)`."""
  _BUILDERS[name] = builder


def names() -> list[str]:
  return sorted(_BUILDERS)


def build_evaluators(evals: ml_collections.ConfigDict) -> dict[str, Any]:
  """The evaluators of `config.evals`, by name."""
  evaluators = {}
  for name, settings in evals.items():
    if name not in _BUILDERS:
      raise ValueError(f"config.evals.{name}: no such evaluator (known: {', '.join(names())})")
    builder = _BUILDERS[name]
    if isinstance(builder, str):
      builder = importlib.import_module(builder).from_config
    evaluators[name] = builder(settings)
  return evaluators
