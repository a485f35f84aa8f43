"""What a run prints and what it writes to TensorBoard."""

import glob
import io
import json
import logging
import os
import pathlib

import ml_collections
import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_file_loader

from ferjax import reporting, summaries


class _Clock:
  def __init__(self, *times):
    self.times = list(times)

  def __call__(self):
    return self.times.pop(0)


def test_progress_rate_excludes_the_compiled_step_and_paused_time():
  clock = _Clock(100.0, 106.0, 106.0, 106.0, 200.0, 202.0, 202.0)
  progress = reporting.Progress(total_steps=10, steps_per_epoch=5, start_step=0,
                                interactive=False, clock=clock)
  for step in range(1, 5):    # Step 1 compiles: the clock starts at its end (t=100).
    progress.step(step, {"loss": 1.0})
  assert progress.steps_per_second() == pytest.approx(3 / 6)      # t=106: 3 steps in 6 s
  assert progress.eta_seconds(4) == pytest.approx(6 / 0.5)        # t=106
  with progress.paused():     # Enters at t=106, leaves at t=200: 94 s not counted.
    pass
  progress.step(5, {"loss": 1.0})
  assert progress.steps_per_second() == pytest.approx(4 / 8)      # t=202: 6 s + 2 s
  assert progress.eta_seconds(5) == pytest.approx(5 / 0.5)        # t=202


def test_format_duration():
  assert reporting.format_duration(3723) == "1h02m03s"
  assert reporting.format_duration(123.4) == "2m03s"
  assert reporting.format_duration(3) == "3s"


def test_library_info_lines_are_dropped():
  ferjax_file = os.path.join(os.path.dirname(reporting.__file__), "train.py")
  def record(level, path):
    return logging.LogRecord("absl", level, path, 1, "message", None, None)
  keep = reporting._FILTER.filter  # pylint: disable=protected-access
  assert keep(record(logging.INFO, ferjax_file))
  assert not keep(record(logging.INFO, "/site-packages/orbax/checkpoint/checkpoint_manager.py"))
  assert keep(record(logging.WARNING, "/site-packages/orbax/checkpoint/checkpoint_manager.py"))


def test_flat_hparams_and_eval_scalars():
  config = ml_collections.ConfigDict({"seed": 1, "model": {"depth": 18, "dtype": "bfloat16",
                                                           "taps": (2, 3)}})
  assert summaries.flat_hparams(config) == {"model.depth": 18, "model.dtype": "bfloat16",
                                            "model.taps": "(2, 3)", "seed": 1}
  metrics = {"war": 0.5, "uar": 0.25, "step": 3, "split": "test",
             "per_class": {"happy": 1.0, "sad": 0.0}}
  assert summaries.eval_scalars(metrics) == {"war": 0.5, "uar": 0.25, "recall/happy": 1.0,
                                             "recall/sad": 0.0}
  np.testing.assert_array_equal(
      summaries.misclassified_indices(np.array([0, 1, 2, 1, 3]), np.array([0, 2, 2, 0, 1]), 2),
      [1, 3])


class _Split:
  """The record access of a pipeline.SplitSource: example j is a 32x32 PNG of colour j."""
  COLOURS = ((0, 0, 255), (255, 0, 0), (255, 255, 0), (0, 255, 0))

  def record(self, j):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), self.COLOURS[j]).save(buffer, format="PNG")
    return j, {"image": buffer.getvalue()}


def _has_colour(image: np.ndarray, colour) -> bool:
  return bool(np.all(image == np.asarray(colour, np.uint8), axis=-1).any())


def test_eval_images_show_only_the_misclassified_examples():
  predictions = {"label": np.array([0, 1, 2, 1]), "prediction": np.array([0, 2, 2, 0])}
  images = summaries.eval_images(_Split(), predictions, ("neutral", "happy", "sad"), "t")
  grid = images["eval/misclassified"]
  assert grid.shape[0] == 1 and grid.shape[-1] == 3 and grid.dtype == np.uint8
  assert _has_colour(grid[0], _Split.COLOURS[1]) and _has_colour(grid[0], _Split.COLOURS[3])
  assert not _has_colour(grid[0], _Split.COLOURS[0])      # correct: not shown
  assert not _has_colour(grid[0], _Split.COLOURS[2])
  assert images["eval/confusion_matrix"].shape[0] == 1


@pytest.fixture
def tiny_run(trained_image_run):
  """The session's tiny training run (with a profiler window): (workdir, CompletedProcess)."""
  workdir, result = trained_image_run
  return pathlib.Path(workdir), result


def test_tiny_run_is_quiet_and_ends_with_the_summary(tiny_run):
  workdir, result = tiny_run
  lines = result.stderr.splitlines()
  assert len(lines) < 40, result.stderr
  assert not any("orbax" in line for line in lines), result.stderr
  done = [i for i, line in enumerate(lines) if line.startswith("ferjax: done at step 9:")]
  assert done, result.stderr
  summary = lines[done[-1]:]
  final = json.loads((workdir / "final_metrics.json").read_text())
  assert f"WAR {final['war']:.4f} UAR {final['uar']:.4f}" in summary[0]
  assert f"  best checkpoint: step 9 (war {final['war']:.4f}), {workdir}/checkpoints/9" in summary
  assert f"  metrics: {workdir}/final_metrics.json" in summary
  assert f"  plots: {workdir}/confusion_matrix.png" in summary
  assert summary[-1] == f"  TensorBoard: tensorboard --logdir {workdir}"
  assert any("steps/s, ETA" in line for line in lines), result.stderr


def _summaries(workdir) -> dict[str, list]:
  """Every summary value in the run's event files: tag -> [(step, value proto)]."""
  values = {}
  for path in glob.glob(str(workdir / "**" / "events.out.tfevents.*"), recursive=True):
    for event in event_file_loader.LegacyEventFileLoader(path).Load():
      for value in event.summary.value:
        values.setdefault(value.tag, []).append((event.step, value))
  return values


def _png(value) -> np.ndarray:
  """The first image of an image summary (tensor: width, height, PNG...)."""
  return np.asarray(Image.open(io.BytesIO(value.tensor.string_val[2])))


def test_tensorboard_holds_hparams_recall_images_and_the_profile(tiny_run):
  workdir, _ = tiny_run
  values = _summaries(workdir)
  plugins = {tag: v[0][1].metadata.plugin_data.plugin_name for tag, v in values.items()}
  assert plugins.get("_hparams_/session_start_info") == "hparams"
  start = values["_hparams_/session_start_info"][0][1].metadata.plugin_data.content
  assert b"model.depth" in start and b"optimizer.learning_rate" in start
  final = json.loads((workdir / "final_metrics.json").read_text())
  for name, recall in final["per_class"].items():
    (step, value), = values[f"eval/recall/{name}"]
    assert step == 9
    assert float(np.frombuffer(value.tensor.tensor_content, np.float32)[0]) == pytest.approx(
        recall, abs=1e-6)
  for tag in ("eval/confusion_matrix", "eval/misclassified"):
    assert plugins[tag] == "images"
    image = _png(values[tag][-1][1])
    assert image.ndim == 3 and min(image.shape[:2]) > 100
  assert "train/learning_rate" in values
  assert glob.glob(str(workdir / "plugins" / "profile" / "*" / "*.xplane.pb"))
