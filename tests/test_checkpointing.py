"""Checkpointer: the best checkpoint by the eval metric survives restarts."""

import grain
import jax
import numpy as np
import pytest

from ferjax import checkpointing, errors


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


def _save_tree(directory, step, tree):
  iterator = iter(grain.MapDataset.range(4).to_iter_dataset())
  checkpointer = checkpointing.Checkpointer(directory, keep=2, best_metric="war")
  checkpointer.save(step, tree, iterator)
  checkpointer.wait()
  checkpointer.close()


def test_restore_model_state_reads_only_the_model(tmp_path):
  model = {"fc": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)},
           "bn": {"mean": np.full((3,), 0.5, np.float32)}}
  state = {"step": np.int32(7), "model": model,
           "objective": {"table": np.ones((4, 2), np.float32)},
           "opt_state": ({"mu": np.zeros((2, 3), np.float32)},)}
  _save_tree(str(tmp_path / "checkpoints"), 7, state)
  _save_tree(str(tmp_path / "checkpoints"), 9, {**state, "step": np.int32(9), "model": {
      "fc": {"kernel": np.zeros((2, 3), np.float32)}, "bn": {"mean": np.zeros(3, np.float32)}}})
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model)
  restored = checkpointing.restore_model_state(str(tmp_path), 7, abstract)   # a workdir
  assert set(restored) == {"fc", "bn"}
  np.testing.assert_array_equal(restored["fc"]["kernel"], model["fc"]["kernel"])
  np.testing.assert_array_equal(restored["bn"]["mean"], [0.5, 0.5, 0.5])
  latest = checkpointing.restore_model_state(str(tmp_path / "checkpoints"), None, abstract)
  np.testing.assert_array_equal(latest["fc"]["kernel"], np.zeros((2, 3)))
  with pytest.raises(errors.UserError, match="no checkpoint of step 8"):
    checkpointing.restore_model_state(str(tmp_path), 8, abstract)


def test_old_positional_checkpoints_fail_with_one_line(tmp_path):
  old = {"step": np.int32(3), "params": {"0": {"w": np.ones(2, np.float32)}},
         "rest": {"0": {"b": np.ones(2, np.float32)}}, "opt_state": ()}
  directory = str(tmp_path / "checkpoints")
  _save_tree(directory, 3, old)
  abstract = {"w": jax.ShapeDtypeStruct((2,), np.float32)}
  with pytest.raises(errors.UserError, match="positional layout") as raised:
    checkpointing.restore_model_state(str(tmp_path), 3, abstract)
  assert "\n" not in str(raised.value)
  checkpointer = checkpointing.Checkpointer(directory, keep=2, best_metric="war")
  with pytest.raises(errors.UserError, match="positional layout"):
    checkpointer.restore(3, {"model": abstract}, None)
  checkpointer.close()
