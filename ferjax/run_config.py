"""Checks of a run's config made before training: loop settings and resuming.

A rerun with the same workdir resumes from its checkpoints; `check_resumable`
refuses one whose config would change the data stream or the saved state.
"""

import json

import ml_collections
from etils import epath

from ferjax import checkpointing, errors


# What a checkpoint can be ranked by (`config.best_metric`); LSTPNet's authors
# selected epochs by WAR + UAR.
RANKING_METRICS = ("war", "uar", "war_plus_uar")

# Config fields (and subtrees) a resumed run must share with the run that wrote its
# checkpoints: they fix the data stream (order, batches per epoch) or the layout of
# the train state. Everything else (epochs, learning rate, eval and logging
# cadence, data_dir, compute dtype) may change between restarts.
RESUME_INVARIANTS = ("seed", "batch_size", "train_drop_remainder", "dataset.name",
                     "dataset.train_split", "dataset.num_classes", "dataset.label_key",
                     "dataset.fold", "dataset.min_frames", "model", "objective.name",
                     "optimizer.name", "optimizer.accumulate_steps", "ema.decay",
                     "input.image_size", "input.num_frames", "input.num_segments")
RESUME_FREE = ("model.dtype",)


def check_run_settings(config: ml_collections.ConfigDict) -> None:
  """Rejects loop settings that would fail late (after an epoch) or never act."""
  for name in ("log_every_steps", "eval_every_epochs", "checkpoint_every_steps",
               "keep_checkpoints", "num_epochs"):
    if config[name] < 1:
      raise errors.UserError(f"config.{name} must be at least 1, got {config[name]}")
  if config.best_metric not in RANKING_METRICS:
    raise errors.UserError(f"config.best_metric must be one of {', '.join(RANKING_METRICS)}, "
                           f"got {config.best_metric!r}")


def ranking_value(eval_metrics: dict, best_metric: str) -> float:
  """The value of `best_metric` (one of RANKING_METRICS) in an evaluation's metrics."""
  if best_metric == "war_plus_uar":
    return eval_metrics["war"] + eval_metrics["uar"]
  return eval_metrics[best_metric]


def _leaves(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
  return flat


def check_resumable(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises if `workdir`'s checkpoints come from a config that differs in a RESUME_INVARIANTS field.

  Fields missing on either side (added or removed by a ferjax upgrade) are not compared.
  """
  workdir_path = epath.Path(workdir)
  recorded_path = workdir_path / "config.json"
  if not (recorded_path.exists() and checkpointing.saved_steps(str(workdir_path / "checkpoints"))):
    return
  recorded = _leaves(json.loads(recorded_path.read_text()))
  current = _leaves(json.loads(config.to_json_best_effort()))
  for key in sorted(set(recorded) & set(current)):
    invariant = any(key == name or key.startswith(name + ".") for name in RESUME_INVARIANTS)
    if invariant and key not in RESUME_FREE and recorded[key] != current[key]:
      raise errors.UserError(
          f"{workdir} holds checkpoints of a run with config.{key}={recorded[key]!r}, "
          f"this command has {current[key]!r}; resume with the same value or use a new "
          "--workdir")
