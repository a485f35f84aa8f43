"""The benchmark (ferjax.bench) runs end to end and reports every figure; no timing checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO  # pylint: disable=g-bad-import-order
from ferjax import peaks
from ferjax.bench import input_pipeline, models, torch_reference

TINY = ("--model=resnet18", "--dataset=synthetic_fer/images_small", "--image_size=32",
        "--batch_size=4", "--steps=2", "--warmup=1")


def _bench(args, data_dir, tmp_path) -> tuple[dict, str]:
  out = str(tmp_path / "bench.json")
  result = subprocess.run([sys.executable, "-m", "ferjax.bench", *args, f"--json_out={out}"],
                          cwd=REPO, env=dict(os.environ, TFDS_DATA_DIR=data_dir),
                          capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  with open(out) as f:
    return json.load(f), result.stdout


def _check_train_side(side: dict, batch_size: int) -> None:
  assert side["step_time_s"] > 0 and side["step_time_min_s"] <= side["step_time_s"]
  assert side["examples_per_s"] == pytest.approx(batch_size / side["step_time_s"])
  assert side["flops_per_step"] > 0 and side["memory"]["peak_bytes"] > 0
  assert side["memory"]["source"]


def test_peak_table():
  assert peaks.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
  assert peaks.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756.5e12
  assert peaks.peak_flops("NVIDIA H200", "float32") == 494.7e12
  assert peaks.peak_flops("NVIDIA A100-SXM4-40GB", "float32") == 156e12
  assert peaks.lookup("TPU v5 lite").name == "TPU v5e"
  assert peaks.lookup("TPU v5").name == "TPU v5p"
  assert peaks.peak_flops("TPU v6 lite", "bfloat16") == 918e12
  assert peaks.peak_flops("cpu", "float32") is None
  with pytest.raises(ValueError, match="dtype"):
    peaks.peak_flops("TPU v4", "float16")


def test_overrides_set_shapes_and_keep_the_original():
  config, name = models.shortcut_config("resnet50")
  assert name == "configs/resnet.py:synthetic,depth=50" and config.model.depth == 50
  big = models.apply_overrides(config, batch_size=8, image_size=224, dtype="bfloat16")
  assert (big.batch_size, big.eval_batch_size, big.model.dtype) == (8, 8, "bfloat16")
  assert (big.input.image_size, big.input.resize_size) == (224, 252)   # 72/64 * 224
  assert (config.input.image_size, config.model.dtype) == (64, "float32")
  with pytest.raises(ValueError, match="--num_frames is for clip models"):
    models.apply_overrides(config, num_frames=4)
  clips = models.apply_overrides(models.shortcut_config("lstpnet")[0], num_frames=4,
                                 image_size=32)
  assert (clips.input.num_frames, clips.input.num_segments, clips.model.num_frames) == (4, 4, 4)
  assert clips.input.resize_size == 32
  with pytest.raises(ValueError, match="--model='vgg'"):
    models.shortcut_config("vgg")


def test_steady_rate_counts_examples_made_while_every_process_is_busy():
  # Process 1 makes 4-example batches over [0, 2], [2, 4]; process 2 over
  # [1, 3], [3, 5]: both are busy in [1, 4], each at 2 examples/s.
  stamps = np.array([[0, 2, 1], [2, 4, 1], [1, 3, 2], [3, 5, 2]], np.float64)
  rate, seconds = input_pipeline.steady_rate(stamps, np.full(4, 4))
  assert seconds == 3.0
  assert rate == pytest.approx((2 + 4 + 4 + 2) / 3)
  with pytest.raises(ValueError, match="--input_batches"):
    input_pipeline.steady_rate(np.array([[0, 1, 1], [2, 3, 2]], np.float64), np.ones(2))


@pytest.mark.parametrize("model,dataset", [("resnet18", "synthetic_fer/images_small"),
                                           ("lstpnet", "synthetic_fer/clips_small")])
def test_input_pipeline_rate(tfds_data_dir, model, dataset):
  config = models.apply_overrides(models.shortcut_config(model)[0], batch_size=4,
                                  image_size=32, dataset=dataset, data_dir=tfds_data_dir)
  row = input_pipeline.measure(config, 0, batches=3)
  assert (row["workers"], row["batches"], row["batch_size"]) == (0, 3, 4)
  assert row["window_s"] > 0 and row["startup_s"] > 0 and row["examples_per_s"] > 0
  if model == "lstpnet":
    assert row["frames_per_s"] == pytest.approx(config.input.num_frames * row["examples_per_s"])


@pytest.mark.slow
def test_cli_train_step_and_input_pipeline(tfds_data_dir, tmp_path):
  results, stdout = _bench([*TINY, "--input", "--workers=0", "--input_batches=3"],
                           tfds_data_dir, tmp_path)
  assert results["setup"]["batch_size"] == 4 and results["setup"]["unit"] == "images"
  assert results["device"]["count"] >= 1 and results["device"]["device_kind"]
  ferjax_side = results["ferjax"]
  _check_train_side(ferjax_side, 4)
  assert ferjax_side["compile_s"] > 0 and ferjax_side["steps"] == 2
  assert ferjax_side["xla_buffers"]["temp_bytes"] > 0
  assert (ferjax_side["mfu"] is None) == (ferjax_side["peak_flops_per_device"] is None)
  [row] = results["input"]
  assert row["workers"] == 0
  assert row["ratio_to_train_step"] == pytest.approx(
      row["examples_per_s"] / ferjax_side["examples_per_s"])
  for text in ("ferjax train step", "FLOPs/step (XLA)", "images/s", "MFU", "peak memory",
               "input pipeline: synthetic_fer/images_small"):
    assert text in stdout
  assert "torch" not in results


@pytest.mark.torch
def test_torch_reference_image_and_frames(tfds_data_dir):
  pytest.importorskip("torchvision")
  images = models.apply_overrides(models.shortcut_config("resnet18")[0], batch_size=8,
                                  image_size=32, data_dir=tfds_data_dir)
  spec = torch_reference.reference_spec(images, steps=1, warmup=0, threads=1)
  assert spec["same_architecture"] and spec["compared"].startswith("same architecture")
  image_side = torch_reference.measure_in_subprocess(spec, timeout=600)
  _check_train_side(image_side, 8)
  assert image_side["threads"] == 1 and image_side["precision"] == "float32"

  clips = models.apply_overrides(models.shortcut_config("lstpnet")[0], batch_size=2,
                                 image_size=32, num_frames=4, data_dir=tfds_data_dir)
  spec = torch_reference.reference_spec(clips, steps=1, warmup=0, threads=1)
  assert not spec["same_architecture"] and spec["compared"].startswith("backbone only")
  clip_side = torch_reference.measure(spec)
  _check_train_side(clip_side, 2)
  # 2 clips x 4 frames run the ResNet-18 on 8 frames: the FLOPs of 8 images, up
  # to the (tiny) classifier on 2 rows instead of 8.
  assert clip_side["flops_per_step"] == pytest.approx(image_side["flops_per_step"], rel=1e-3)


@pytest.mark.slow
@pytest.mark.torch
def test_cli_side_by_side_ratio(tfds_data_dir, tmp_path):
  pytest.importorskip("torchvision")
  results, stdout = _bench([*TINY, "--torch", "--torch_threads=1"], tfds_data_dir, tmp_path)
  torch_side = results["torch"]
  _check_train_side(torch_side, 4)
  assert torch_side["same_architecture"]
  assert results["ratio_ferjax_over_torch"] == pytest.approx(
      results["ferjax"]["examples_per_s"] / torch_side["examples_per_s"])
  assert "ratio ferjax/PyTorch" in stdout and "same architecture" in stdout
