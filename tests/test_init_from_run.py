"""`init_from` naming a ferjax run: its ResNet/LSTPNet weights start another model."""

import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conftest import TINY_IMAGE_OVERRIDES  # pylint: disable=g-bad-import-order
from configs import lstpnet as lstpnet_config
from ferjax.convert import LoadError, load_init
from ferjax.models import registry

RESNET = "--config=configs/resnet.py:synthetic"


@pytest.fixture
def image_run(trained_image_run):
  """The session's tiny ResNet-18 run on synthetic images: (workdir, its final metrics)."""
  workdir, _ = trained_image_run
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    return workdir, json.load(f)


def _final_state(workdir: str) -> dict:
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(steps[-1]), "state"))


def test_strict_load_of_the_same_model_reproduces_its_metrics(ferjax_cli, image_run, tmp_path):
  workdir, final = image_run
  fresh = str(tmp_path / "from_run")
  ferjax_cli([RESNET, f"--workdir={fresh}", *TINY_IMAGE_OVERRIDES, "--config.eval_only=True",
              f"--config.init_from={workdir}", "--config.init_strict=True"])
  with open(os.path.join(fresh, "final_metrics.json")) as f:
    reproduced = json.load(f)
  assert reproduced["confusion_matrix"] == final["confusion_matrix"]
  assert reproduced["war"] == final["war"]


def test_image_resnet_starts_the_lstpnet_backbone(image_run):
  workdir, _ = image_run
  config = lstpnet_config.get_config("synthetic")
  model = registry.build_model(config.model, 7, rngs=nnx.Rngs(0))
  lstformer_before = np.asarray(model.lstformer.temporal_conv.kernel[...])
  report = load_init(model, workdir, partial=True)

  state = _final_state(workdir)
  source = state["model"]
  np.testing.assert_array_equal(np.asarray(model.backbone.conv1.kernel[...]),
                                source["conv1"]["kernel"]["value"])
  np.testing.assert_array_equal(np.asarray(model.backbone.layer4[1].conv2.kernel[...]),
                                source["layer4"]["1"]["conv2"]["kernel"]["value"])
  np.testing.assert_array_equal(np.asarray(model.backbone.bn1.mean[...]),
                                source["bn1"]["mean"]["value"])
  # Conv kernels, BN affine and statistics load; LSTPNet's extras keep their init.
  assert len(report.matched) == 100
  assert {row.source.split(":")[1] for row in report.unexpected} == {"fc/kernel", "fc/bias"}
  # What stays at its init inside the backbone: the conv biases and the TCEs.
  in_backbone = [row.target for row in report.missing if row.target.startswith("backbone/")]
  assert in_backbone and all(
      target.endswith(("conv1/bias", "conv2/bias", "downsample/conv/bias"))
      or "/input_gate/" in target for target in in_backbone)
  np.testing.assert_array_equal(np.asarray(model.lstformer.temporal_conv.kernel[...]),
                                lstformer_before)


def test_a_step_directory_loads_that_step(image_run):
  workdir, _ = image_run
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                 if d.isdigit())
  config = lstpnet_config.get_config("synthetic,baseline")
  model = registry.build_model(config.model, 7, rngs=nnx.Rngs(0))
  step_dir = os.path.join(workdir, "checkpoints", str(steps[0]))
  report = load_init(model, step_dir, partial=True)
  assert report.target.startswith("FrameAverage.backbone")
  source = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))["model"]
  np.testing.assert_array_equal(np.asarray(model.backbone.conv1.kernel[...]),
                                source["conv1"]["kernel"]["value"])


def test_strict_load_into_another_model_names_the_mismatch(image_run):
  workdir, _ = image_run
  config = lstpnet_config.get_config("synthetic")
  model = registry.build_model(config.model, 7, rngs=nnx.Rngs(0))
  with pytest.raises(LoadError, match="missing"):
    load_init(model, workdir, partial=False)


def test_workdir_without_checkpoints_is_an_error(image_run, tmp_path):
  workdir, _ = image_run
  empty = tmp_path / "empty"
  (empty / "checkpoints").mkdir(parents=True)
  with open(os.path.join(workdir, "config.json")) as f:
    (empty / "config.json").write_text(f.read())
  model = registry.build_model(lstpnet_config.get_config("synthetic").model, 7,
                               rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="without any saved checkpoint"):
    load_init(model, str(empty), partial=True)


def test_lstpnet_trains_from_the_image_run_through_the_cli(image_run, trained_clip_run):
  workdir, _ = image_run
  clip_workdir, result = trained_clip_run
  assert (f"{workdir} -> LSTPNet.backbone (partial): 100 matched, 0 skipped (shape), "
          "98 missing, 2 unexpected") in result.stderr
  with open(os.path.join(clip_workdir, "final_metrics.json")) as f:
    assert json.load(f)["num_examples"] == 50
