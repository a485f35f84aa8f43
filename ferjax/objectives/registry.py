"""The objective plug-ins: what they are given and how `config.objective.name` picks one.

An objective is an `nnx.Module` whose variables (label tables, class centers)
live in the train state, are checkpointed and resume exactly. It implements

  __call__(outputs, batch, step) -> (loss, {name: scalar})   inside the jitted step
  update(outputs, batch, step) -> None    after the optimizer step, outputs detached
  predict(outputs) -> scores `[B, K]`     used for accuracy and evaluation

and optionally `on_train_end(workdir, context)`, called on every process once
training has finished (e.g. to write artifacts; only process 0 should write).
A builder `from_config(objective_config, context, *, rngs)` makes one from its
`config.objective` subtree and the run's `TrainContext`.
"""

import dataclasses
import functools
import importlib
from collections.abc import Callable

import ml_collections
import numpy as np
from flax import nnx

from ferjax.data import pipeline

Builder = Callable[..., nnx.Module]

_BUILDERS: dict[str, str | Builder] = {
    "cross_entropy": "ferjax.objectives.cross_entropy",
    "center_cosine": "ferjax.objectives.center_cosine",
    "soft_label_mining": "ferjax.objectives.soft_label_mining",
}


def _ids_by_position(split: pipeline.SplitSource) -> list[str]:
  """`[num_records]` example ids ("" for filtered records; a record without `id`: its position)."""
  ids = [""] * split.num_records
  for j in range(len(split)):
    position, record = split.record(j)
    example_id = record.get("id")
    ids[position] = example_id.decode() if isinstance(example_id, bytes) else str(position)
  return ids


@dataclasses.dataclass(frozen=True)
class TrainContext:
  """What an objective may know about the run and its train split.

  Records are indexed by their position in the split (`batch["index"]`);
  `num_records` counts the filtered-out ones too. `labels` and `ids` are read
  from the split on first use only. Steps are optimizer updates; with gradient
  accumulation each is `accumulate_steps` micro-batches, and an objective's
  `update` runs after every micro-batch (docs/training.md).
  """
  num_classes: int
  feature_dim: int             # D of the model's `features` [B, D]
  steps_per_epoch: int
  num_records: int
  read_labels: Callable[[], np.ndarray]
  read_ids: Callable[[], list[str]] | None = None
  accumulate_steps: int = 1

  @classmethod
  def for_split(cls, split: pipeline.SplitSource, *, label_key: str, num_classes: int,
                feature_dim: int, steps_per_epoch: int,
                accumulate_steps: int = 1) -> "TrainContext":
    return cls(num_classes, feature_dim, steps_per_epoch, split.num_records,
               read_labels=lambda: split.column(label_key),
               read_ids=lambda: _ids_by_position(split), accumulate_steps=accumulate_steps)

  @functools.cached_property
  def labels(self) -> np.ndarray:
    """`[num_records]` int64 hard labels by record position, -1 for filtered records."""
    return np.asarray(self.read_labels())

  @functools.cached_property
  def ids(self) -> list[str]:
    """`[num_records]` example ids by record position (default: the positions)."""
    if self.read_ids is None:
      return [str(i) for i in range(self.num_records)]
    return list(self.read_ids())


def register(name: str, builder: Builder) -> None:
  """Makes `config.objective.name = name` build with `builder(objective_config, context, rngs=)`."""
  _BUILDERS[name] = builder


def names() -> list[str]:
  return sorted(_BUILDERS)


def build_objective(objective_config: ml_collections.ConfigDict, context: TrainContext, *,
                    rngs: nnx.Rngs) -> nnx.Module:
  """Instantiates `objective_config.name` for the run described by `context`."""
  if objective_config.name not in _BUILDERS:
    raise ValueError(f"config.objective.name {objective_config.name!r} is not one of "
                     f"{', '.join(names())}")
  builder = _BUILDERS[objective_config.name]
  if isinstance(builder, str):
    builder = importlib.import_module(builder).from_config
  return builder(objective_config, context, rngs=rngs)
