"""ferjax.predict / ferjax.export on one tiny image run and one tiny clip run (module fixtures)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from conftest import REPO  # pylint: disable=g-bad-import-order
from ferjax import checkpointing, errors, model_inputs, train
from ferjax.data import augment, pipeline
from ferjax.inference import cli, export, media, restore
from ferjax.inference.predictor import Predictor

RECORD_KEYS = {"file", "frame", "time", "track", "face", "box", "score", "landmarks", "label",
               "probabilities", "logits"}
@pytest.fixture
def image_run(trained_image_run) -> str:
  return trained_image_run[0]


@pytest.fixture
def clip_run(trained_clip_run) -> str:
  return trained_clip_run[0]


def _eval_reference(workdir: str, data_dir: str, monkeypatch):
  """(model restored the way training does, eval logits of the first 2 eval examples, records)."""
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  config = restore.load_config(workdir)
  experiment = train.Experiment(config, workdir)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                            keep=config.keep_checkpoints,
                                            best_metric=config.best_metric)
  state = checkpointer.restore(checkpointer.latest_step(), experiment.abstract_state(), None)
  checkpointer.close()
  model = nnx.merge(experiment.model_graphdef, state["model"])
  split = pipeline.open_split(config.dataset, config.dataset.eval_split, train=False)
  loader = pipeline.BatchLoader(split, config, train=False, global_batch_size=2,
                                drop_remainder=False)
  graphdef, variables = nnx.split(model)
  # Jitted, as the eval step is: eager and fused float32 arithmetic differ by a few ulp.
  logits = jax.jit(lambda v, batch: model_inputs.forward(
      nnx.merge(graphdef, v), batch, config.input, train=False)["logits"])(variables, loader(0))
  return model, np.asarray(logits), [split.record(j)[1] for j in range(2)]


def assert_logits_close(actual, expected):
  """Within 1e-5, or 1e-6 relative: the tiny runs' logits reach a few hundred, where one
  float32 ulp is 3e-5 and a different batch size alone can change the last bits."""
  np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-5)


def _records(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_restore_reads_the_models_variables_and_image_parity(image_run, tfds_data_dir,
                                                              monkeypatch, tmp_path):
  model, logits, records = _eval_reference(image_run, tfds_data_dir, monkeypatch)
  trained = restore.load_trained_model(image_run)
  assert trained.step == 9 and trained.class_names[:2] == ("neutral", "happy")
  expected, got = nnx.state(model), nnx.state(trained.model)
  for (path, a), (_, b) in zip(nnx.to_flat_state(expected), nnx.to_flat_state(got)):
    np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))
  # A test record written to PNG (lossless) and predicted as a face crop.
  pngs = []
  for k, record in enumerate(records):
    pngs.append(str(tmp_path / f"record{k}.png"))
    augment.decode(record["image"]).save(pngs[-1])
  out = str(tmp_path / "faces.jsonl")
  assert cli.run(pngs, cli.Settings(workdir=image_run, no_detect=True, out=out)) == 0
  rows = _records(out)
  assert_logits_close([r["logits"] for r in rows], logits)
  assert all(set(r) == RECORD_KEYS and r["score"] is None for r in rows)


def test_clip_video_parity(clip_run, tfds_data_dir, monkeypatch, tmp_path):
  _, logits, records = _eval_reference(clip_run, tfds_data_dir, monkeypatch)
  frames = [np.asarray(augment.decode(f)) for f in records[0]["frames"]]
  video = str(tmp_path / "clip.mov")  # PNG frames in MOV: lossless, so decoding is exact.
  media.write_video(video, frames, 8, codec="png", pixel_format="rgb24")
  out = str(tmp_path / "clips.jsonl")
  settings = cli.Settings(workdir=clip_run, no_detect=True, out=out, window=len(frames),
                          annotate=str(tmp_path / "annotated"))
  assert cli.run([video], settings) == 0
  (row,) = _records(out)
  assert (row["frame"], row["last_frame"], row["track"]) == (0, len(frames) - 1, 0)
  assert_logits_close(row["logits"], logits[0])
  assert sorted(os.listdir(tmp_path / "annotated")) == ["clip.mp4", "clip_timeline.png"]


def test_astronaut_and_bad_inputs_through_the_cli(image_run, tmp_path):
  from skimage import data  # pylint: disable=g-import-not-at-top
  astronaut = str(tmp_path / "astronaut.png")
  shutil.copy(os.path.join(data.data_dir, "astronaut.png"), astronaut)
  corrupt = str(tmp_path / "corrupt.png")
  with open(astronaut, "rb") as f:
    open(corrupt, "wb").write(f.read()[:2000])
  text = str(tmp_path / "notes.jpg")
  open(text, "w").write("not an image\n")
  noface = str(tmp_path / "noface.mp4")
  media.write_video(noface, [np.full((64, 64, 3), 128, np.uint8)] * 3, 5)
  empty = str(tmp_path / "empty.mp4")
  open(empty, "wb").close()
  missing = str(tmp_path / "missing.jpg")
  out = str(tmp_path / "faces.jsonl")
  env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
  result = subprocess.run(
      [sys.executable, "-m", "ferjax.predict", f"--workdir={image_run}", f"--out={out}",
       f"--annotate={tmp_path / 'annotated'}", astronaut, corrupt, text, noface, empty, missing],
      cwd=REPO, env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("ferjax:")]
  assert lines[-1] == ("ferjax: 6 input(s): 2 read (1 face(s), 1 without a face), "
                       "4 could not be read")
  for path in (corrupt, text, empty, missing):
    assert sum(l.startswith(f"ferjax: error: {path}: ") for l in lines) == 1, lines
  assert f"ferjax: warning: {noface}: no face found" in lines
  assert "Traceback" not in result.stderr
  (face,) = _records(out)
  assert set(face) == RECORD_KEYS and face["file"] == astronaut and face["frame"] is None
  x0, y0, x1, y1 = face["box"]
  # The astronaut's face: eyes near (205, 100) and (245, 102), chin near y = 165.
  assert x0 < 200 and x1 > 250 and y0 < 95 and 160 < y1 < 200 and x1 - x0 < 120
  assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left",
                                    "mouth_right"}
  assert abs(sum(face["probabilities"].values()) - 1) < 1e-4
  assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
  assert os.listdir(tmp_path / "annotated") == ["astronaut.png"]


def test_workdir_errors(image_run, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "ferjax.predict", f"--workdir={tmp_path / 'nope'}", "x.jpg"],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"ferjax: error: workdir {tmp_path / 'nope'} does not exist")
  untrained = tmp_path / "untrained"
  (untrained / "checkpoints").mkdir(parents=True)
  shutil.copy(os.path.join(image_run, "config.json"), untrained)
  with pytest.raises(errors.UserError, match="no checkpoints in .*untrained/checkpoints"):
    Predictor.from_workdir(str(untrained))
  with pytest.raises(errors.UserError, match="no checkpoint of step 3 .* saved: 9"):
    Predictor.from_workdir(image_run, checkpoint=3)


_LOAD_WITHOUT_FERJAX = r"""
import sys
sys.modules["ferjax"] = None  # Importing ferjax (installed or not) now fails.
import numpy as np
results = {}
for fmt, directory, inputs in [line.split() for line in sys.argv[1:]]:
  x = np.load(inputs)
  if fmt == "stablehlo":
    import jax
    with open(directory + "/model.stablehlo", "rb") as f:
      logits, _ = jax.export.deserialize(bytearray(f.read())).call(x)
  else:
    import tensorflow as tf
    logits = tf.saved_model.load(directory).signatures["serving_default"](
        pixels=tf.constant(x))["logits"].numpy()
  np.save(directory + "/logits.npy", np.asarray(logits))
assert sys.modules["ferjax"] is None  # Nothing replaced the block by importing ferjax.
"""


def test_exports_reload_without_ferjax(image_run, clip_run, tmp_path):
  # The CLI once (ResNet, StableHLO), side by side with the other exports in process.
  cli = subprocess.Popen(
      [sys.executable, "-m", "ferjax.export", f"--workdir={image_run}", "--format=stablehlo",
       f"--out={tmp_path / 'resnet_stablehlo'}"],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  jobs, expected = [], {}
  rng = np.random.default_rng(0)
  # The CLI's export comes last, so that the others run while it works.
  for name, workdir in (("lstpnet", clip_run), ("resnet", image_run)):
    predictor = Predictor.from_workdir(workdir)
    for fmt in ("savedmodel", "stablehlo"):
      directory = tmp_path / f"{name}_{fmt}"
      if (name, fmt) == ("resnet", "stablehlo"):
        _, stderr = cli.communicate(timeout=300)
        assert cli.returncode == 0, stderr[-3000:]
      else:
        export.export(predictor, fmt, str(directory))
      signature = json.loads((directory / "signature.json").read_text())
      assert signature["class_names"] == list(predictor.class_names)
      assert signature["input"]["shape"][1:] == list(export.input_shape(predictor))
      batch = 3 if fmt == "stablehlo" else 5  # The batch size is free.
      x = rng.integers(0, 256, (batch, *export.input_shape(predictor)), dtype=np.uint8)
      np.save(directory / "x.npy", x)
      offset = (predictor.config.input.resize_size - predictor.image_size) // 2
      size = predictor.image_size
      expected[directory] = predictor.logits(x[..., offset:offset + size,
                                               offset:offset + size, :])
      jobs.append(f"{fmt} {directory} {directory / 'x.npy'}")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_FERJAX, *jobs], cwd=tmp_path,
                          env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  for directory, logits in expected.items():
    assert_logits_close(np.load(directory / "logits.npy"), logits)


def test_face_crop_levels_the_eyes():
  from ferjax.inference import crop  # pylint: disable=g-import-not-at-top
  from ferjax.inference.detection import Face  # pylint: disable=g-import-not-at-top
  image = np.zeros((40, 40, 3), np.uint8)
  image[10:20, 20:30] = 255  # A bright square: its crop with margin 0.5 is centred on it.
  face = Face((20.0, 10.0, 30.0, 20.0), 1.0,
              np.asarray([[20, 10], [30, 20], [25, 15], [20, 20], [30, 20]], np.float32))
  plain = crop.crop_face(image, face, crop.CropStyle(margin=0.5, align=False))
  assert plain.shape == (20, 20, 3)
  np.testing.assert_array_equal(plain[5:15, 5:15], 255)
  assert plain[:4].max() == 0 and plain[:, :4].max() == 0
  # Eyes on a 45 degree line: the levelled crop turns the square into a diamond.
  # Half its diagonal is 5 sqrt(2) = 7.07 px: rows/columns 4..15 through the centre are inside,
  # the plain crop's corner (5, 5) is outside.
  levelled = crop.crop_face(image, face, crop.CropStyle(margin=0.5, align=True))
  assert levelled[10, 4:16].min() == 255 and levelled[4:16, 10].min() == 255
  assert levelled[5, 5].max() == 0 and levelled[:2].max() == 0


def test_iou_tracking():
  from ferjax.inference import tracking  # pylint: disable=g-import-not-at-top
  assert tracking.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
  assert tracking.iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
  tracker = tracking.IoUTracker(min_iou=0.3, max_gap=5)
  assert tracker.update(0, [(0, 0, 10, 10), (50, 50, 60, 60)]) == [0, 1]
  # Moved by one pixel (IoU 9/11) and listed in the other order: same tracks.
  assert tracker.update(1, [(51, 50, 61, 60), (1, 0, 11, 10)]) == [1, 0]
  assert tracker.update(3, [(30, 30, 40, 40)]) == [2]     # no overlap: a new track
  assert tracker.update(9, [(1, 0, 11, 10)]) == [3]       # track 0 unseen for 8 > 5 frames


@pytest.mark.parametrize("config_name,arg", [
    ("stse_resnet50", "synthetic"), ("msfe", "synthetic"), ("lstpnet", "synthetic,baseline"),
    ("slm_aea", "synthetic")])
def test_restore_reads_every_model_family(config_name, arg, tmp_path):
  """A train-state checkpoint of each family (written as training writes it) restores the
  model's variables exactly, without the objective or the optimizer state."""
  import importlib  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from ferjax.models import registry  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{config_name}").get_config(arg)
  config.model.depth = 18
  build = lambda seed: registry.build_model(config.model, 7, rngs=nnx.Rngs(seed))
  model = build(1)
  objective = nnx.Linear(2, 3, rngs=nnx.Rngs(0))  # Stands in for the objective.
  state = train.TrainState(np.int32(5), nnx.state(model), nnx.state(objective),
                           {"mu": nnx.state(model, nnx.Param)})
  with ocp.StandardCheckpointer() as checkpointer:  # Closing waits for the async save.
    checkpointer.save(tmp_path / "5" / "state", state.to_dict())
  _, abstract = nnx.split(nnx.eval_shape(lambda: build(0)))
  restored = checkpointing.restore_model_state(str(tmp_path), 5, abstract)
  expected = nnx.to_flat_state(nnx.state(model))
  got = dict(nnx.to_flat_state(restored))
  assert len(got) == len(expected)
  for path, variable in expected:
    np.testing.assert_array_equal(np.asarray(got[path][...]), np.asarray(variable[...]),
                                  err_msg=str(path))
