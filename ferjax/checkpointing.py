"""Orbax checkpoints of the train state together with the Grain iterator state.

Each step directory `checkpoints/STEP` holds two items:
  * `state`: the named train-state tree `{step, model, objective, opt_state}`,
    where `model` is the model's whole `nnx.State` (parameters, BatchNorm
    statistics, AEA's train-set feature mean), `objective` the objective's
    (SLM's label table, EMA centers) and `opt_state` the optimizer's;
  * `data`: the position of the data stream, so a restarted run continues the
    same sequence of batches.
`restore_model_state` reads only `state/model`, without an optimizer or the
dataset. Orbax writes each step to a temporary directory and renames it when
complete (commit markers on gs://), so a crash or SIGTERM mid-save never
damages the previous checkpoints. Kept: the latest `keep` checkpoints plus the
best by the configured eval metric.
"""

from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from ferjax import errors

# The names of the train-state tree (`state` item); see the module docstring.
STATE_KEYS = ("step", "model", "objective", "opt_state")


def checkpoint_dir(path: str) -> epath.Path:
  """`path/checkpoints` for a workdir (it holds `config.json` or `checkpoints/`), else `path`."""
  path = epath.Path(path)
  return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def saved_steps(directory: str) -> list[int]:
  """The finished steps under a checkpoint `directory`, ascending ([] if it does not exist)."""
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(ocp.utils.checkpoint_steps(directory))


def _check_layout(step_dir: epath.Path) -> None:
  """Raises a one-line UserError for a checkpoint written with the old positional tree."""
  try:
    metadata = ocp.PyTreeCheckpointer().metadata(step_dir / "state")
  except Exception:  # pylint: disable=broad-except
    return  # Unreadable metadata is reported by the restore itself.
  tree = getattr(metadata, "item_metadata", metadata)
  if tree is not None and "params" in tree and "model" not in tree:
    raise errors.UserError(
        f"checkpoint {step_dir} has the positional layout of ferjax before the named "
        "train state ({params, rest}); evaluate it with that version, or retrain "
        "into a new --workdir")


def _with_default_sharding(abstract_tree):
  """ShapeDtypeStructs without a sharding get the first local device's."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda x: x if getattr(x, "sharding", None) is not None
      else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_tree)


def restore_model_state(workdir_or_ckpt_dir: str, step: int | None, abstract_model_state):
  """The `model` subtree of a checkpoint: the model's `nnx.State` (params, statistics...).

  Args:
    workdir_or_ckpt_dir: a run's workdir or its `checkpoints` directory.
    step: the step to read; None for the latest.
    abstract_model_state: the target structure, e.g.
      `nnx.state(nnx.eval_shape(lambda: build_model(...)))`; leaves without a
      sharding are put on the first local device.
  Raises:
    errors.UserError: no such checkpoint, an old layout, or unreadable files.
  """
  directory = checkpoint_dir(workdir_or_ckpt_dir)
  steps = saved_steps(str(directory))
  if step is None and steps:
    step = steps[-1]
  if step not in steps:
    raise errors.UserError(f"no checkpoint of step {step} in {directory} (saved: {steps})")
  step_dir = directory / str(step)
  _check_layout(step_dir)
  target = {"model": _with_default_sharding(abstract_model_state)}
  args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))
  try:
    return ocp.PyTreeCheckpointer().restore(step_dir / "state", args=args)["model"]
  except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
    raise errors.UserError(f"checkpoint {step_dir} cannot be read ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None


class Checkpointer:
  """Saves and restores (state, data iterator) under `directory`."""

  def __init__(self, directory: str, *, keep: int, best_metric: str):
    self.best_metric = best_metric
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(keep),
        policies.BestN(get_metric_fn=lambda metrics: metrics[best_metric], n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    # best_fn makes Orbax store each checkpoint's metrics on disk: without it the
    # ranking lives only in memory and a restarted run forgets (and deletes) the best.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation, create=True,
        best_fn=lambda metrics: metrics[best_metric], best_mode="max")
    self.manager = ocp.CheckpointManager(directory, options=options,
                                         item_names=("state", "data"))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def save(self, step: int, state: dict[str, Any], data_iterator: grain.DatasetIterator,
           metrics: dict | None = None) -> None:
    """Saves `state` (a dict with STATE_KEYS) asynchronously; `metrics` rank the best."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=grain.checkpoint.CheckpointSave(data_iterator))
    self.manager.save(step, args=args, metrics=metrics, force=True)

  def restore(self, step: int, abstract_state: dict[str, Any],
              data_iterator: grain.DatasetIterator | None) -> dict[str, Any]:
    """Restores `step` into the shapes/shardings of `abstract_state` (and the iterator)."""
    step_dir = self.manager.directory / str(step)
    _check_layout(step_dir)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
      raise errors.UserError(f"checkpoint {step_dir} cannot be read ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); move it away "
                             "to resume from an earlier one") from None
    return restored["state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_like(state, sharding):
  """ShapeDtypeStructs with `sharding`, the restore target for `state`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      state)
