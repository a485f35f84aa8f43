"""Builds the training objective named by `config.objective.name`."""

import importlib

import ml_collections
from flax import nnx

OBJECTIVE_MODULES: dict[str, str] = {
    "cross_entropy": "ferjax.objectives.cross_entropy",
    "center_cosine": "ferjax.objectives.center_cosine",
    "soft_label_mining": "ferjax.objectives.soft_label_mining",
}


def build_objective(objective_config: ml_collections.ConfigDict, *, num_classes: int,
                    feature_dim: int, num_train_examples: int, rngs: nnx.Rngs,
                    **extra) -> nnx.Module:
  """Instantiates `objective_config.name`; `extra` carries method-specific inputs."""
  if objective_config.name not in OBJECTIVE_MODULES:
    raise ValueError(f"config.objective.name {objective_config.name!r} is not one of "
                     f"{', '.join(sorted(OBJECTIVE_MODULES))}")
  module = importlib.import_module(OBJECTIVE_MODULES[objective_config.name])
  return module.from_config(objective_config, num_classes=num_classes,
                            feature_dim=feature_dim, num_train_examples=num_train_examples,
                            rngs=rngs, **extra)
