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

Faults (docs/reliability.md):
- A step that cannot be read while an older one can is moved aside to
  `<step>.damaged` (never deleted; out of reach of Orbax's retention) and the
  newest readable step is restored, with one warning line.
- A step whose ranking file (`<step>/metrics/metrics`) is unreadable keeps its
  state; the file is renamed to `metrics.unreadable` and the step is unranked.
- Out of disk space, before a save (local disks: free space below the last
  checkpoint's size) or during one, raises `OutOfSpace`, one line.
"""

from collections.abc import Iterator
import contextlib
import errno
import json
import logging as std_logging
import math
import os
import shutil
from typing import Any

from absl import logging
from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from ferjax import errors

# The names of the train-state tree (`state` item); see the module docstring.
STATE_KEYS = ("step", "model", "objective", "opt_state")
# With `config.ema.decay` > 0 the tree also holds the model's moving average
# (ferjax.ema), an `nnx.State` shaped like `model`.
EMA_KEY = "ema"


def checkpoint_dir(path: str) -> epath.Path:
  """`path/checkpoints` for a workdir (it holds `config.json` or `checkpoints/`), else `path`."""
  path = epath.Path(path)
  return path / "checkpoints" if (path / "checkpoints").is_dir() else path


# Orbax keeps a step's eval metrics in <step>/metrics/metrics (JSON), read for every step
# when a CheckpointManager starts.
_METRICS_ITEM = "metrics"
# Headroom over the last checkpoint's size (compression makes sizes vary a little).
_SPACE_MARGIN = 1.1
_TMP_MARK = ".orbax-checkpoint-tmp"  # In the names of Orbax's unfinished saves.
_MAX_CAUSE_CHARS = 100
_MAX_LOG_CHARS = 200


class OutOfSpace(errors.UserError):
  """The checkpoint filesystem is (or would become) full; earlier checkpoints are intact."""


def saved_steps(directory: str) -> list[int]:
  """The finished steps under a checkpoint `directory`, ascending ([] if it does not exist)."""
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(ocp.utils.checkpoint_steps(directory))


def _check_layout(step_dir: epath.Path, entries: tuple[str, ...] = (), *,
                  exact: bool = False) -> None:
  """Raises a one-line UserError for a checkpoint written with the old positional tree,
  or whose named entries lack one of `entries` (or, `exact`, hold others): e.g. an
  `ema` entry is there exactly when the run had config.ema.decay > 0."""
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level
  absl_logger.setLevel(std_logging.ERROR)  # Orbax warns of a damaged step's missing files.
  try:
    metadata = ocp.PyTreeCheckpointer().metadata(step_dir / "state")
  except Exception:  # pylint: disable=broad-except
    return  # Unreadable metadata is reported by the restore itself.
  finally:
    absl_logger.setLevel(level)
  tree = getattr(metadata, "item_metadata", metadata)
  if tree is None:
    return
  if "params" in tree and "model" not in tree:
    raise errors.UserError(
        f"checkpoint {step_dir} has the positional layout of ferjax before the named "
        "train state ({params, rest}); evaluate it with that version, or retrain "
        "into a new --workdir")
  if any(name not in tree for name in entries) or (exact and set(tree) - set(entries)):
    raise errors.UserError(
        f"checkpoint {step_dir} holds {', '.join(sorted(tree))}; this run expects "
        f"{', '.join(sorted(entries))}: use the training run's config (an `ema` entry "
        "is saved when config.ema.decay > 0)")


def _with_default_sharding(abstract_tree):
  """ShapeDtypeStructs without a sharding get the first local device's."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
      lambda x: x if getattr(x, "sharding", None) is not None
      else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_tree)


def restore_model_state(workdir_or_ckpt_dir: str, step: int | None, abstract_model_state,
                        *, entry: str = "model"):
  """The `model` subtree of a checkpoint: the model's `nnx.State` (params, statistics...).

  Args:
    workdir_or_ckpt_dir: a run's workdir or its `checkpoints` directory.
    step: the step to read; None for the latest.
    abstract_model_state: the target structure, e.g.
      `nnx.state(nnx.eval_shape(lambda: build_model(...)))`; leaves without a
      sharding are put on the first local device.
    entry: "model" for the trained weights, EMA_KEY ("ema") for their moving
      average (runs with `config.ema.decay` > 0); both have the same structure.
  Raises:
    errors.UserError: no such checkpoint or entry, an old layout, or unreadable files.
  """
  directory = checkpoint_dir(workdir_or_ckpt_dir)
  steps = saved_steps(str(directory))
  if step is None and steps:
    step = steps[-1]
  if step not in steps:
    raise errors.UserError(f"no checkpoint of step {step} in {directory} (saved: {steps})")
  step_dir = directory / str(step)
  _check_layout(step_dir, (entry,))
  target = {entry: _with_default_sharding(abstract_model_state)}
  args = ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))
  try:
    return ocp.PyTreeCheckpointer().restore(step_dir / "state", args=args)[entry]
  except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
    raise errors.UserError(f"checkpoint {step_dir} cannot be read ({short_cause(e)})") from None


def short_cause(error: BaseException) -> str:
  """`Type: first line` of an exception, cut to a length that fits one terminal line.

  TensorStore errors carry several KB of JSON spec on their first line.
  """
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  if len(text) > _MAX_CAUSE_CHARS:
    text = text[:_MAX_CAUSE_CHARS] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def is_out_of_space(error: BaseException | None) -> bool:
  """Whether `error` (or an exception it was raised from) reports a full disk or quota."""
  while error is not None:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(error)
    # TensorStore reports ENOSPC as a ValueError with an absl status code.
    if "RESOURCE_EXHAUSTED" in text or "No space left on device" in text:
      return True
    error = error.__cause__ or error.__context__
  return False


class _OrbaxLogFilter:
  """Quiets two kinds of Orbax log records that mislead here.

  - Its writer threads log every out-of-space error with a traceback; the record
    stays, as one line, and `Checkpointer` reports the failure itself.
  - "did not provide metrics" on every save: steps are ranked after they are
    saved (`Checkpointer.rank`).
  """

  def filter(self, record) -> bool:
    if record.exc_info and is_out_of_space(record.exc_info[1]):
      record.msg, record.args = record.getMessage()[:_MAX_LOG_CHARS], ()
      record.exc_info = record.exc_text = None
    return "did not provide metrics" not in str(record.msg)


_LOG_FILTER = _OrbaxLogFilter()


def _is_local(path: epath.Path) -> bool:
  return "://" not in os.fspath(path)


def _size_bytes(path: epath.Path) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _set_aside_unreadable_metrics(directory: epath.Path) -> None:
  """Renames ranking files Orbax could not parse (it would fail to start on them)."""
  for step in saved_steps(str(directory)):
    path = directory / str(step) / _METRICS_ITEM / _METRICS_ITEM
    try:
      metrics = json.loads(path.read_text()) if path.exists() else {}
      readable = isinstance(metrics, dict) and all(
          isinstance(v, (int, float)) for v in metrics.values())
    except (ValueError, OSError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors.
      readable = False
    if not readable:
      path.rename(path.with_name(_METRICS_ITEM + ".unreadable"))
      logging.warning("checkpoint step %d: its eval metrics file is unreadable, renamed to "
                      "%s.unreadable; the step is no longer ranked", step, path)


class Checkpointer:
  """Saves and restores (state, data iterator) under `directory`."""

  def __init__(self, directory: str, *, keep: int, best_metric: str):
    self.best_metric = best_metric
    self.directory = epath.Path(directory)
    if jax.process_index() == 0:
      _set_aside_unreadable_metrics(self.directory)
    _sync("ferjax_checkpoint_metrics_checked")
    rank = lambda metrics: metrics.get(best_metric, -math.inf)
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(keep),
        policies.BestN(get_metric_fn=rank, n=1, keep_checkpoints_without_metrics=False),
    ])
    # best_fn makes Orbax store each checkpoint's metrics on disk: without it the
    # ranking lives only in memory and a restarted run forgets (and deletes) the best.
    # Temporary directories of interrupted saves hold disk space: removed at start.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation, create=True, cleanup_tmp_directories=True,
        best_fn=rank, best_mode="max")
    self.manager = ocp.CheckpointManager(directory, options=options,
                                         item_names=("state", "data"))
    self._pending_step = None
    logging.get_absl_logger().addFilter(_LOG_FILTER)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def save(self, step: int, state: dict[str, Any],
           data_iterator: grain.DatasetIterator) -> None:
    """Saves `state` (a dict with STATE_KEYS) asynchronously; raises OutOfSpace if this or
    the previous save cannot fit."""
    self.wait()  # Orbax waits for the previous save anyway; its failure surfaces here.
    self.check_space(step)
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=grain.checkpoint.CheckpointSave(data_iterator))
    with self._reporting_space(step):
      self.manager.save(step, args=args, force=True)
    self._pending_step = step

  def rank(self, step: int, metrics: dict[str, float]) -> None:
    """Records eval `metrics` of the saved `step` for choosing the best checkpoint.

    The state is saved before its evaluation (a failing eval loses nothing), so
    the metrics join the step afterwards, in the file where Orbax keeps them.
    """
    self.wait()
    if jax.process_index() == 0:
      path = self.directory / str(step) / _METRICS_ITEM
      path.mkdir(parents=True, exist_ok=True)
      with self._reporting_space(step):
        (path / _METRICS_ITEM).write_text(json.dumps(metrics))
    _sync(f"ferjax_checkpoint_rank_{step}")
    self.manager.reload()

  def restore(self, step: int, abstract_state: dict[str, Any],
              data_iterator: grain.DatasetIterator | None) -> dict[str, Any]:
    """Restores `step` into the shapes/shardings of `abstract_state` (and the iterator)."""
    try:
      return self._restore(step, abstract_state, data_iterator)
    except errors.UserError:
      raise
    except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
      raise errors.UserError(f"checkpoint {self.directory / str(step)} cannot be read "
                             f"({short_cause(e)})") from None

  def restore_latest(self, abstract_state: dict[str, Any],
                     data_iterator: grain.DatasetIterator, *, last_step: int | None = None
                     ) -> tuple[int | None, dict[str, Any] | None]:
    """Restores the newest readable step: `(step, state)`, or `(None, None)` without steps.

    A step at or past `last_step` (a finished run rerun with fewer epochs) has
    no data position left to continue: only the state is restored.

    Steps newer than the restored one could not be read: they are moved aside
    to `<step>.damaged` with one warning line each. If no step can be read
    (more likely a changed state layout than damage) nothing is moved and the
    newest step's error is raised.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      try:
        finished = last_step is not None and step >= last_step
        state = self._restore(step, abstract_state, None if finished else data_iterator)
      except errors.UserError:  # Not damage: a mistake that every step shares.
        raise
      except Exception as e:  # pylint: disable=broad-exception-caught
        failures.append((step, e))
        continue
      for damaged, error in failures:
        self._set_aside(damaged, error, step)
      if failures:
        self.manager.reload()
      return step, state
    if failures:
      step, error = failures[0]
      raise errors.UserError(f"no checkpoint in {self.directory} can be read; step {step}: "
                             f"{short_cause(error)}")
    return None, None

  def _restore(self, step: int, abstract_state: dict[str, Any], data_iterator):
    _check_layout(self.manager.directory / str(step), tuple(abstract_state), exact=True)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def _set_aside(self, step: int, error: Exception, fallback: int) -> None:
    source = self.directory / str(step)
    target = self.directory / f"{step}.damaged"
    if jax.process_index() == 0:
      suffix = 1
      while target.exists():
        suffix += 1
        target = self.directory / f"{step}.damaged{suffix}"
      source.rename(target)
    _sync(f"ferjax_checkpoint_set_aside_{step}")
    logging.warning("checkpoint step %d cannot be read (%s); moved to %s, resuming from "
                    "step %d", step, short_cause(error), target.name, fallback)

  def check_space(self, step: int | None = None) -> None:
    """Raises OutOfSpace if a save (of `step`) would not fit, judged by the last one's size.

    Checked on local disks only (free space means nothing on gs://).
    """
    latest = self.latest_step()
    # Multi-process runs write to shared (mostly gs://) storage: not checked.
    if latest is None or not _is_local(self.directory) or jax.process_count() > 1:
      return
    needed = _size_bytes(self.directory / str(latest)) * _SPACE_MARGIN
    # Orbax removes interrupted saves' temporary directories in the background.
    freeing = sum(_size_bytes(path) for path in self.directory.glob(f"*{_TMP_MARK}*"))
    free = shutil.disk_usage(self.directory).free + freeing
    if free < needed:
      raise OutOfSpace(self._space_message(
          f"cannot save {'a checkpoint' if step is None else f'step {step}'}: "
          f"{free / 2**20:.1f} MiB free, the last checkpoint "
          f"took {needed / _SPACE_MARGIN / 2**20:.1f} MiB"))

  def _space_message(self, what: str) -> str:
    complete = saved_steps(str(self.directory))  # Not a failed save's temporary directory.
    kept = (f"step {complete[-1]} is intact" if complete else "no checkpoint was written")
    return (f"{self.directory} is out of disk space: {what}; {kept}. Free space and rerun "
            "the same command to resume")

  @contextlib.contextmanager
  def _reporting_space(self, step: int | None) -> Iterator[None]:
    """Turns an out-of-space error while writing `step` into one `OutOfSpace` line."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-exception-caught
      if not is_out_of_space(e):
        raise
      what = f"saving step {step} failed" if step is not None else "a save failed"
      raise OutOfSpace(self._space_message(what)) from None

  def wait(self) -> None:
    with self._reporting_space(self._pending_step):
      self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
    logging.get_absl_logger().removeFilter(_LOG_FILTER)


def abstract_like(state, sharding):
  """ShapeDtypeStructs with `sharding`, the restore target for `state`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      state)
