"""Orbax checkpoints of the train state together with the Grain iterator state.

A checkpoint holds the model parameters, every non-parameter variable
(BatchNorm statistics, SLM's label table, EMA centers), the optimizer state
and the step (`state`), plus the position of the data stream (`data`), so a
restarted run continues the same sequence of batches. Orbax writes each step
to a temporary directory and renames it when complete, so a crash or SIGTERM
mid-save never damages the previous checkpoints. Kept: the latest
`keep` checkpoints plus the best by the configured eval metric.
"""

from etils import epath
import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from ferjax import errors


def saved_steps(directory: str) -> list[int]:
  """The steps saved under a checkpoint `directory`, ascending ([] if it does not exist).

  Orbax creates the directory before the first save, so it may exist and be empty.
  """
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


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

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def save(self, step: int, state, data_iterator: grain.DatasetIterator,
           metrics: dict | None = None) -> None:
    """Saves asynchronously; `metrics` (eval results) rank the best checkpoint."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=grain.checkpoint.CheckpointSave(data_iterator))
    self.manager.save(step, args=args, metrics=metrics, force=True)

  def restore(self, step: int, abstract_state, data_iterator: grain.DatasetIterator | None):
    """Restores `step` into the shapes/shardings of `abstract_state` (and the iterator)."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
      path = self.manager.directory / str(step)
      raise errors.UserError(f"checkpoint {path} cannot be read ({type(e).__name__}: "
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
