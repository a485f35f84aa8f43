"""A trained model from a ferjax workdir: its config, one checkpoint's weights, its classes.

Nothing here builds the optimizer or opens the dataset: the model is rebuilt
from `config.json` and only its variables are read from the checkpoint
(`checkpointing.restore_model_state`, an Orbax partial restore of the
checkpoint's `model` entry, or of `ema`, its moving average).
"""

import dataclasses
import json

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from ferjax import checkpointing, errors
from ferjax.data import labels
from ferjax.models import registry


@dataclasses.dataclass
class TrainedModel:
  """A run's model with restored weights, its config, checkpoint step and class names."""
  model: nnx.Module
  config: ml_collections.ConfigDict
  step: int
  class_names: tuple[str, ...]
  workdir: str


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's `config.json` as a ConfigDict.

  Raises:
    UserError: no such workdir, or no readable config.json in it.
  """
  path = epath.Path(workdir)
  if not path.is_dir():
    raise errors.UserError(f"workdir {workdir} does not exist")
  config_file = path / "config.json"
  if not config_file.exists():
    raise errors.UserError(f"workdir {workdir} has no config.json: not a ferjax run")
  try:
    return ml_collections.ConfigDict(json.loads(config_file.read_text()))
  except (ValueError, OSError) as e:
    raise errors.UserError(f"{config_file} cannot be read: {e}") from None


def checkpoint_step(workdir: str, config: ml_collections.ConfigDict,
                    checkpoint: str | int) -> int:
  """The step that `checkpoint` ('latest' | 'best' | a saved step) names.

  Raises:
    UserError: no checkpoints, no best checkpoint, or a step that was not saved.
  """
  directory = epath.Path(workdir) / "checkpoints"
  steps = checkpointing.saved_steps(str(directory))
  if not steps:
    raise errors.UserError(f"no checkpoints in {directory}: train first or check --workdir")
  if checkpoint == "latest":
    return steps[-1]
  if checkpoint == "best":
    checkpointer = checkpointing.Checkpointer(str(directory), keep=config.keep_checkpoints,
                                              best_metric=config.best_metric)
    try:
      best = checkpointer.best_step()
    finally:
      checkpointer.close()
    if best is None:
      raise errors.UserError(f"no checkpoint in {directory} was ranked by "
                             f"{config.best_metric} (none saved after an evaluation)")
    return best
  try:
    step = int(checkpoint)
  except ValueError:
    raise errors.UserError(f"checkpoint must be 'latest', 'best' or a step number, got "
                           f"{checkpoint!r}") from None
  if step not in steps:
    raise errors.UserError(f"no checkpoint of step {step} in {directory}; saved: "
                           f"{', '.join(map(str, steps))}")
  return step


def class_names(workdir: str, config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The run's class names: final_metrics.json's, else the canonical names for the config."""
  metrics_file = epath.Path(workdir) / "final_metrics.json"
  if metrics_file.exists():
    try:
      names = json.loads(metrics_file.read_text()).get("class_names")
    except ValueError:
      names = None
    if names and len(names) == config.dataset.num_classes:
      return tuple(names)
  try:
    return labels.class_names(config.dataset.num_classes)
  except ValueError:  # A dataset with its own label space (Multi-PIE) that never finished.
    return tuple(f"class_{k}" for k in range(config.dataset.num_classes))


def load_trained_model(workdir: str, checkpoint: str | int = "latest", *,
                       ema: bool = False) -> TrainedModel:
  """Rebuilds the run's model from config.json and restores the chosen checkpoint into it.

  With `ema`, the weights are the run's moving average (`config.ema.decay` > 0).

  Raises:
    UserError: a missing workdir, config or checkpoint, or an unreadable one.
  """
  config = load_config(workdir)
  step = checkpoint_step(workdir, config, checkpoint)
  try:
    build = lambda: registry.build_model(config.model, config.dataset.num_classes,
                                         rngs=nnx.Rngs(0))
    abstract = nnx.eval_shape(build)
  except (ValueError, KeyError, AttributeError) as e:
    raise errors.UserError(f"{workdir}/config.json does not describe a model ferjax can "
                           f"build: {e}") from None
  if ema and not config.get("ema", {}).get("decay", 0.0):
    raise errors.UserError(f"run {workdir} kept no weight EMA (config.ema.decay = 0)")
  graphdef, abstract_state = nnx.split(abstract)
  variables = checkpointing.restore_model_state(
      workdir, step, abstract_state, entry=checkpointing.EMA_KEY if ema else "model")
  model = nnx.merge(graphdef, variables)
  return TrainedModel(model, config, step, class_names(workdir, config), str(workdir))
