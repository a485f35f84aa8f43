"""Checks of a run's config made before anything heavy runs: fields, paths, resuming.

`validate` checks the whole config once, up front, against `SCHEMA` (a rule of
type and range for every field ferjax reads) and a few rules between fields,
and makes its path fields absolute. A rerun with the same workdir resumes from
its checkpoints; `check_resumable` refuses one whose config would change the
data stream or the layout of the saved state, and `check_evaluable` an
evaluation whose state would not match the checkpoints'.
"""

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import ml_collections
from etils import epath

from ferjax import errors, paths
from ferjax.evaluators import registry as evaluator_registry
from ferjax.models import aea, msfe, precision, stse
from ferjax.models import registry as model_registry
from ferjax.models import resnet
from ferjax.objectives import center_cosine
from ferjax.objectives import registry as objective_registry


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one config value must be: `accepts(value)`, described by `expects`."""
  expects: str
  accepts: Callable[[Any], bool]
  required: bool = True   # False: only some configs have the field (method settings)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int) -> Rule:
  return Rule(f"an integer >= {minimum}",
              lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum)


def number(low: float | None = None, high: float | None = None, *,
           open_high: bool = False, positive: bool = False) -> Rule:
  """A finite int or float >= low (> 0 with `positive`) and <= high (< high with `open_high`)."""
  if positive:
    low = 0.0
  if high is not None:
    expects = (f"a number in {'(' if positive else '['}{low}, {high}"
               f"{')' if open_high else ']'}")
  elif low is not None:
    expects = f"a number {'>' if positive else '>='} {low}"
  else:
    expects = "a number"

  def accepts(v) -> bool:
    if not _is_number(v) or (low is not None and (v <= low if positive else v < low)):
      return False
    return high is None or (v < high if open_high else v <= high)
  return Rule(expects, accepts)


def one_of(names) -> Rule:
  names = tuple(names)
  return Rule(f"one of {', '.join(map(repr, names))}", lambda v: v in names)


def text(*, empty: bool = False) -> Rule:
  return Rule("a string" if empty else "a non-empty string",
              lambda v: isinstance(v, str) and (empty or bool(v.strip())))


BOOLEAN = Rule("True or False", lambda v: isinstance(v, bool))
PROBABILITY = number(0.0, 1.0)


def sequence(item: Rule, length: int | None = None) -> Rule:
  """A tuple (or list) of `length` (any number when None) values passing `item`."""
  size = f"{length} " if length is not None else ""
  return Rule(f"a tuple of {size}values, each {item.expects}",
              lambda v: isinstance(v, (tuple, list)) and (length is None or len(v) == length)
              and all(item.accepts(x) for x in v))


def optional(rule: Rule) -> Rule:
  return dataclasses.replace(rule, required=False)


# What a checkpoint can be ranked by (`config.best_metric`); LSTPNet's authors
# selected epochs by WAR + UAR.
RANKING_METRICS = ("war", "uar", "war_plus_uar")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "exponential", "lagged_cosine")
# Models that read clips `[B, T, H, W, C]`; every other model reads images.
CLIP_MODELS = ("lstpnet", "frame_average")
STAGES = sequence(one_of((1, 2, 3, 4)))

# Every config field ferjax reads (ferjax/configs/default.py documents them), with the
# rule its value must pass; `*` stands for any key of a mapping field.
SCHEMA: dict[str, Rule] = {
    "seed": integer(0),
    "dataset.name": text(),
    "dataset.data_dir": text(empty=True),
    "dataset.kind": one_of(("image", "clip")),
    "dataset.train_split": text(),
    "dataset.eval_split": text(),
    "dataset.extra_eval_splits": sequence(text()),
    "dataset.num_classes": integer(2),
    "dataset.label_key": text(),
    "dataset.fold": integer(0),
    "dataset.min_frames": integer(0),
    "dataset.metadata": sequence(text()),
    "input.image_size": integer(1),
    "input.resize_size": integer(1),
    "input.train_crop": one_of(("random_crop", "random_resized_crop", "none")),
    "input.hflip": BOOLEAN,
    "input.gaussian_noise_var": number(0.0),
    "input.random_erasing": PROBABILITY,
    "input.erasing_scale": sequence(number(0.0, 1.0), 2),
    "input.mean": sequence(number(), 3),
    "input.std": sequence(number(positive=True), 3),
    "input.num_frames": integer(1),
    "input.num_segments": integer(1),
    "input.mixup_alpha": number(0.0),
    "input.cutmix_alpha": number(0.0),
    "input.mix_prob": PROBABILITY,
    "input.mix_switch_prob": PROBABILITY,
    "input.worker_count": integer(0),
    "input.prefetch": integer(0),
    "model.name": text(),   # checked against the model registry by `validate`
    "model.depth": one_of(resnet.STAGE_SIZES),
    "model.dtype": one_of(("float32", "bfloat16")),
    "model.grad_dtype": one_of(precision.GRADIENT_DTYPES),
    "model.num_frames": optional(integer(1)),
    "model.lstpnet.transformer_depth": optional(integer(1)),
    "model.lstpnet.heads": optional(integer(1)),
    "model.lstpnet.dim_head": optional(integer(1)),
    "model.lstpnet.mlp_dim": optional(integer(1)),
    "model.msfe.taps": optional(STAGES),
    "model.msfe.attention": optional(one_of(msfe.ATTENTION_VARIANTS)),
    "model.msfe.reduction": optional(integer(1)),
    "model.msfe.branch_dim": optional(integer(1)),
    "model.msfe.embed_dim": optional(integer(1)),
    "model.stse.enabled": optional(BOOLEAN),
    "model.stse.mode": optional(one_of(stse.MODES)),
    "model.stse.gap_input": optional(one_of(stse.GAP_INPUTS)),
    "model.stse.reduction": optional(integer(1)),
    "model.stse.excitation_bn": optional(BOOLEAN),
    "model.stse.excitation_bias": optional(BOOLEAN),
    "model.stse.rescale": optional(BOOLEAN),
    "model.stse.stages": optional(STAGES),
    "model.aea.enabled": optional(BOOLEAN),
    "model.aea.eval_mode": optional(one_of(aea.EVAL_MODES)),
    "init_from": text(empty=True),
    "init_strict": BOOLEAN,
    "init_class_order": one_of(("", "dfew", "canonical")),
    "train_drop_remainder": BOOLEAN,
    "objective.name": text(),   # checked against the objective registry by `validate`
    "objective.label_smoothing": optional(number(0.0, 1.0, open_high=True)),
    "objective.ccl.variant": optional(one_of(center_cosine.VARIANTS)),
    "objective.ccl.scale": optional(number(positive=True)),
    "objective.ccl.margin": optional(number(0.0)),
    "objective.ccl.weight": optional(number(0.0)),
    "objective.ccl.pull_weight": optional(number(0.0)),
    "objective.ccl.inter_weight": optional(number(0.0)),
    "objective.ccl.use_ce_head": optional(BOOLEAN),
    "objective.ccl.center_update": optional(one_of(center_cosine.CENTER_UPDATES)),
    "objective.ccl.center_lr_mult": optional(number(0.0)),
    "objective.ccl.ema_rate": optional(PROBABILITY),
    "objective.ccl.predict_with": optional(one_of(center_cosine.PREDICT_WITH)),
    "objective.k": optional(number(positive=True)),
    "objective.p": optional(number(0.0, 1.0, open_high=True, positive=True)),
    "objective.lam": optional(number(0.0)),
    "objective.alpha": optional(number(0.0)),
    "objective.beta": optional(integer(1)),
    "objective.steps_per_epoch": optional(integer(0)),
    "objective.export_soft_labels": optional(BOOLEAN),
    "optimizer.name": one_of(OPTIMIZERS),
    "optimizer.learning_rate": number(0.0),
    "optimizer.momentum": number(0.0, 1.0, open_high=True),
    "optimizer.nesterov": BOOLEAN,
    "optimizer.b1": number(0.0, 1.0, open_high=True),
    "optimizer.b2": number(0.0, 1.0, open_high=True),
    "optimizer.eps": number(0.0),
    "optimizer.weight_decay": number(0.0),
    "optimizer.grad_clip_norm": number(0.0),
    "optimizer.no_decay": sequence(text()),
    "optimizer.lr_multipliers.*": optional(number(0.0)),
    "optimizer.accumulate_steps": integer(1),
    "ema.decay": number(0.0, 1.0, open_high=True),
    "schedule.name": one_of(SCHEDULES),
    "schedule.warmup_epochs": number(0.0),
    "schedule.step_epochs": integer(1),
    "schedule.decay_rate": number(positive=True),
    "schedule.min_learning_rate": number(0.0),
    "batch_size": integer(1),
    "eval_batch_size": integer(1),
    "num_epochs": integer(1),
    "log_every_steps": integer(1),
    "tensorboard": BOOLEAN,
    "profile_steps": integer(0),
    "profile_first_step": integer(0),
    "eval_every_epochs": integer(1),
    "checkpoint_every_steps": integer(1),
    "keep_checkpoints": integer(1),
    "best_metric": one_of(RANKING_METRICS),
    "eval_only": BOOLEAN,
    "eval_checkpoint": one_of(("latest", "best")),
    "eval_ema": BOOLEAN,
    "evals.pose.buckets": optional(sequence(number())),
    "evals.aea.shuffle_seeds": optional(sequence(integer(0))),
    "evals.tensorboard.max_examples": optional(integer(0)),
}

# The built-in plug-ins, whose settings SCHEMA checks; a registered plug-in
# (objective or evaluator) checks its own settings when it is built.
BUILTIN_OBJECTIVES = ("cross_entropy", "center_cosine", "soft_label_mining")
BUILTIN_EVALUATORS = ("classification", "pose", "embedding", "aea", "tensorboard")

# Method settings a model or objective reads: required when it is chosen.
NEEDED_BY = {
    ("model.name", "lstpnet"): ("model.num_frames", "model.lstpnet.transformer_depth",
                                "model.lstpnet.heads", "model.lstpnet.dim_head",
                                "model.lstpnet.mlp_dim"),
    ("model.name", "msfe"): tuple(k for k in SCHEMA if k.startswith("model.msfe.")),
    ("model.name", "stse_resnet"): tuple(k for k in SCHEMA if k.startswith("model.stse.")),
    ("objective.name", "center_cosine"): tuple(k for k in SCHEMA
                                               if k.startswith("objective.ccl.")),
    ("objective.name", "soft_label_mining"): ("objective.k", "objective.p", "objective.lam",
                                              "objective.alpha", "objective.beta"),
}

# Config fields holding local or remote paths: made absolute by `validate`.
DIRECTORY_FIELDS = ("dataset.data_dir",)

# Config fields (and subtrees) a resumed run must share with the run that wrote its
# checkpoints: they fix the data stream (order, batches per epoch) or the layout of
# the train state. Everything else (epochs, learning rate, eval and logging
# cadence, data_dir, compute and gradient dtypes) may change between restarts.
DATA_STREAM_INVARIANTS = ("seed", "batch_size", "train_drop_remainder")
STATE_INVARIANTS = ("dataset.name", "dataset.train_split", "dataset.num_classes",
                    "dataset.label_key", "dataset.fold", "dataset.min_frames", "model",
                    "objective.name", "optimizer.name", "optimizer.accumulate_steps",
                    "ema.decay", "input.image_size",
                    "input.num_frames", "input.num_segments")
RESUME_INVARIANTS = DATA_STREAM_INVARIANTS + STATE_INVARIANTS
RESUME_FREE = ("model.dtype", "model.grad_dtype")


def _leaves(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
  return flat


def flatten(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{dotted field: value}, references resolved; empty mappings have no leaves."""
  return _leaves(config.to_dict())


def _rule_for(key: str) -> Rule | None:
  if key in SCHEMA:
    return SCHEMA[key]
  parent, _, _ = key.rpartition(".")
  return SCHEMA.get(f"{parent}.*")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field of `config` against SCHEMA and between fields; resolves paths.

  `dataset.data_dir` and `init_from` become absolute (`~` and relative paths
  resolved, `gs://` kept). Call before anything heavy: it reads no data.

  Raises:
    UserError: naming the first field that is missing, unknown, of the wrong
      type or out of range, or inconsistent with another.
  """
  if not isinstance(config, ml_collections.ConfigDict):
    raise errors.UserError(f"the config is a {type(config).__name__}, not an "
                           "ml_collections.ConfigDict (get_config() must return one)")
  values = flatten(config)
  plugin_objective = values.get("objective.name") not in BUILTIN_OBJECTIVES
  for key, value in values.items():
    rule = _rule_for(key)
    parts = key.split(".")
    if rule is None and ((parts[0] == "objective" and plugin_objective) or
                         (parts[0] == "evals" and parts[1] not in BUILTIN_EVALUATORS)):
      continue   # A registered plug-in's own settings.
    if rule is None:
      raise errors.UserError(f"config.{key} is not a field ferjax reads "
                             "(ferjax/configs/default.py lists them); remove it")
    if not rule.accepts(value):
      raise errors.UserError(f"config.{key} must be {rule.expects}, got {value!r}")
  needed = [key for key, rule in SCHEMA.items() if rule.required and "*" not in key]
  for (switch, chosen), keys in NEEDED_BY.items():
    if values.get(switch) == chosen:
      needed += keys
  for key in needed:
    if key not in values:
      raise errors.UserError(f"config.{key} is missing (ferjax/configs/default.py has "
                             "every field)")
  _check_registered(config)
  _check_consistency(config)
  _resolve_paths(config)


def _check_registered(config: ml_collections.ConfigDict) -> None:
  """The model, objective and evaluators must be built in or registered."""
  for key, value, known in (
      ("model.name", config.model.name, sorted(model_registry.MODEL_MODULES)),
      ("objective.name", config.objective.name, objective_registry.names())):
    rule = one_of(known)
    if not rule.accepts(value):
      raise errors.UserError(f"config.{key} must be {rule.expects}, got {value!r}")
  for name in config.evals:
    if name not in evaluator_registry.names():
      raise errors.UserError(f"config.evals.{name}: no such evaluator (known: "
                             f"{', '.join(evaluator_registry.names())})")
  if "classification" not in config.evals:
    raise errors.UserError("config.evals must hold 'classification': its WAR/UAR rank "
                           "checkpoints (config.best_metric)")


def _check_consistency(config: ml_collections.ConfigDict) -> None:
  """Rules between fields, each of which alone passed SCHEMA."""
  inputs = config.input
  if inputs.resize_size < inputs.image_size:
    raise errors.UserError(f"config.input.resize_size={inputs.resize_size} is smaller than "
                           f"config.input.image_size={inputs.image_size} (the crop)")
  low, high = inputs.erasing_scale
  if low > high:
    raise errors.UserError(f"config.input.erasing_scale={tuple(inputs.erasing_scale)} must "
                           "be (low, high) with low <= high")
  if config.profile_steps and not config.tensorboard:
    # The trace is TensorBoard logdir content, written by XLA's own file system
    # (which, like TensorFlow's, reaches gs:// only at Google's endpoint).
    raise errors.UserError(f"config.profile_steps={config.profile_steps} writes a trace "
                           "for TensorBoard's Profile tab, but config.tensorboard=False; "
                           "set config.profile_steps=0 or config.tensorboard=True")
  model, kind = config.model.name, config.dataset.kind
  if (model in CLIP_MODELS) != (kind == "clip"):
    wants = "clips" if model in CLIP_MODELS else "images"
    raise errors.UserError(f"config.model.name={model!r} reads {wants}, but "
                           f"config.dataset.kind={kind!r}; pick a {kind} model or dataset")
  if kind == "clip" and inputs.num_frames % inputs.num_segments:
    raise errors.UserError(f"config.input.num_frames={inputs.num_frames} must be a multiple "
                           f"of config.input.num_segments={inputs.num_segments}")
  if model == "lstpnet" and config.model.num_frames != inputs.num_frames:
    raise errors.UserError(f"config.model.num_frames={config.model.num_frames} differs from "
                           f"config.input.num_frames={inputs.num_frames}")
  if config.schedule.warmup_epochs > config.num_epochs:
    raise errors.UserError(f"config.schedule.warmup_epochs={config.schedule.warmup_epochs} "
                           f"is longer than config.num_epochs={config.num_epochs}")
  if "pose" in config.evals:
    buckets = list(config.evals.pose.get("buckets", ()))
    if len(buckets) < 2 or any(a >= b for a, b in zip(buckets, buckets[1:])):
      raise errors.UserError(f"config.evals.pose.buckets={tuple(buckets)} must be >= 2 "
                             "strictly increasing yaw bucket edges (degrees)")
  with_aea = "aea" in config.model and config.model.aea.enabled
  if with_aea != ("aea" in config.evals):
    raise errors.UserError("config.model.aea.enabled and config.evals.aea go together: the "
                           "aea evaluator computes the feature mean the AEA model predicts with")


def _resolve_paths(config: ml_collections.ConfigDict) -> None:
  """Makes the path fields absolute; `init_from` must exist and be of a loadable kind."""
  for key in DIRECTORY_FIELDS:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    if node[leaf]:
      node[leaf] = paths.absolute(node[leaf], f"config.{key}")
  if not config.init_from:
    return
  config.init_from = paths.absolute(config.init_from, "config.init_from", directory=False)
  path = epath.Path(config.init_from)
  if not path.exists():
    raise errors.UserError(f"config.init_from={config.init_from} does not exist")
  # ferjax.convert imports Orbax; loaded only for a run that starts from weights.
  from ferjax.convert import init_from  # pylint: disable=g-import-not-at-top
  if not path.is_dir() and not path.name.endswith(init_from.PYTORCH_SUFFIXES):
    raise errors.UserError(f"config.init_from={config.init_from}: {init_from.ACCEPTED}")


def check_batch_fits(config: ml_collections.ConfigDict, num_train_examples: int) -> None:
  """Refuses a global batch larger than the training split (known once it is opened)."""
  if config.batch_size > num_train_examples:
    raise errors.UserError(
        f"config.batch_size={config.batch_size} is larger than the {num_train_examples} "
        f"training examples of {config.dataset.name}:{config.dataset.train_split} (after "
        "the config's filters); lower config.batch_size")


def ranking_value(eval_metrics: dict, best_metric: str) -> float:
  """The value of `best_metric` (one of RANKING_METRICS) in an evaluation's metrics."""
  if best_metric == "war_plus_uar":
    return eval_metrics["war"] + eval_metrics["uar"]
  return eval_metrics[best_metric]


def optimizer_state_layout(leaves: dict[str, Any]) -> dict[str, bool]:
  """{field: switch} for the settings that add or remove parts of the optimizer state.

  Clipping (grad_clip_norm > 0), SGD momentum (momentum > 0) and each learning-rate
  multiplier other than 1 each add a state of their own to the optimizer chain
  (see `ferjax.optim.make_optimizer`); a checkpoint restores only into the same chain.
  """
  layout = {"optimizer.grad_clip_norm": leaves["optimizer.grad_clip_norm"] > 0}
  if leaves["optimizer.name"] == "sgd":
    layout["optimizer.momentum"] = leaves["optimizer.momentum"] > 0
  for key, value in leaves.items():
    if key.startswith("optimizer.lr_multipliers."):
      layout[key] = value != 1.0
  return layout


def _check_same_state(config: ml_collections.ConfigDict, workdir: str,
                      invariants: tuple[str, ...], action: str) -> None:
  """Compares `invariants` and the optimizer-state layout with workdir/config.json."""
  # ferjax.checkpointing imports Orbax; this module stays importable without it.
  from ferjax import checkpointing  # pylint: disable=g-import-not-at-top
  workdir_path = epath.Path(workdir)
  recorded_path = workdir_path / "config.json"
  if not (recorded_path.exists() and checkpointing.saved_steps(str(workdir_path / "checkpoints"))):
    return
  try:
    recorded = _leaves(json.loads(recorded_path.read_text()))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.UserError(f"{recorded_path} is not valid JSON ({e}); it records the config "
                           "the checkpoints were written with") from None
  current = _leaves(json.loads(config.to_json_best_effort()))
  for key in sorted(set(recorded) & set(current)):
    invariant = any(key == name or key.startswith(name + ".") for name in invariants)
    if invariant and key not in RESUME_FREE and recorded[key] != current[key]:
      raise errors.UserError(
          f"{workdir} holds checkpoints of a run with config.{key}={recorded[key]!r}, "
          f"this command has {current[key]!r}; {action} with the same value or use a new "
          "--workdir")
  if not all(key in recorded for key in ("optimizer.name", "optimizer.grad_clip_norm",
                                         "optimizer.momentum")):
    return
  before, after = optimizer_state_layout(recorded), optimizer_state_layout(current)
  for key in sorted(set(before) | set(after)):
    if before.get(key, False) != after.get(key, False):
      raise errors.UserError(
          f"{workdir} holds checkpoints of a run with config.{key}="
          f"{recorded.get(key, 'unset')!r}, this command has {current.get(key, 'unset')!r}: "
          "that adds or removes a part of the optimizer state the checkpoints hold; "
          f"{action} with a value on the same side of the switch (0 / > 0, 1 / not 1) or "
          "use a new --workdir")


def check_resumable(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises if `workdir`'s checkpoints come from a config that differs in a RESUME_INVARIANTS
  field or in the layout of the optimizer state (`optimizer_state_layout`).

  Fields missing on either side (added or removed by a ferjax upgrade) are not compared.
  """
  _check_same_state(config, workdir, RESUME_INVARIANTS, "resume")


def check_evaluable(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises if eval_only would restore `workdir`'s checkpoints into another train state.

  The data order does not matter for an evaluation; the model, the objective's
  state, the optimizer state and the input size (STATE_INVARIANTS) must match
  the run's recorded config.json.
  """
  _check_same_state(config, workdir, STATE_INVARIANTS, "evaluate")
