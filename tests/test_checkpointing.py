"""Checkpointer: the best checkpoint by the eval metric survives restarts."""

import grain
import jax
import numpy as np

from ferjax import checkpointing


def _save(checkpointer, step, metrics, iterator):
  checkpointer.save(step, {"w": np.full((2,), float(step), np.float32)}, iterator)
  if metrics is not None:
    checkpointer.rank(step, metrics)


def test_best_checkpoint_is_kept_and_found_after_a_restart(tmp_path):
  directory = str(tmp_path / "checkpoints")
  iterator = iter(grain.MapDataset.range(10).to_iter_dataset())
  checkpointer = checkpointing.Checkpointer(directory, keep=1, best_metric="war")
  for step, war in ((1, 0.9), (2, None), (3, 0.5)):
    _save(checkpointer, step, {"war": war} if war is not None else None, iterator)
  checkpointer.wait()
  assert checkpointer.best_step() == 1 and checkpointer.latest_step() == 3
  checkpointer.close()

  # A resumed run (new manager) must still know step 1 is the best: its
  # metrics come from disk, so later unranked saves do not delete it.
  checkpointer = checkpointing.Checkpointer(directory, keep=1, best_metric="war")
  for step in (4, 5):
    _save(checkpointer, step, None, iterator)
  checkpointer.wait()
  assert checkpointer.best_step() == 1
  assert checkpointer.manager.all_steps() == [1, 5]
  assert checkpointing.saved_steps(directory) == [1, 5]
  abstract = {"w": jax.ShapeDtypeStruct((2,), np.float32)}
  restored = checkpointer.restore(1, abstract, None)
  np.testing.assert_array_equal(restored["w"], [1.0, 1.0])
  checkpointer.close()


def test_saved_steps_of_missing_and_empty_directories(tmp_path):
  assert checkpointing.saved_steps(str(tmp_path / "missing")) == []
  (tmp_path / "checkpoints").mkdir()   # as Orbax leaves it before the first save
  assert checkpointing.saved_steps(str(tmp_path / "checkpoints")) == []
