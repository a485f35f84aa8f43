"""The `:smoke` variants: every config has one, and resnet's trains well above chance."""

import importlib
import json
import os

import pytest

from conftest import run_cli
from ferjax import configs

SMOKE_DATA = {"lstpnet": "synthetic_fer/clips_smoke"}


@pytest.mark.parametrize("name", [n for n in configs.NAMES if n != "default"])
def test_every_config_has_a_smoke_variant_of_its_own_method(name):
  module = importlib.import_module(f"ferjax.configs.{name}")
  smoke, full = module.get_config("smoke"), module.get_config("synthetic")
  assert smoke.dataset.name == SMOKE_DATA.get(name, "synthetic_fer/images_smoke")
  assert smoke.input.image_size == 32 and smoke.init_from == ""
  assert (smoke.model.name, smoke.objective.name) == (full.model.name, full.objective.name)


def test_resnet_smoke_trains_above_chance(tmp_path):
  """Generates synthetic_fer/images_smoke, then `--config=resnet:smoke` from start to end."""
  data_dir, workdir = str(tmp_path / "tfds"), tmp_path / "run"
  run_cli(["--config=resnet:smoke", f"--workdir={workdir}"], data_dir)
  metrics = json.loads((workdir / "final_metrics.json").read_text())
  assert metrics["step"] == 2 * (2000 // 32)
  assert metrics["war"] >= 0.5, metrics["war"]  # chance: 1/7
  assert os.listdir(workdir / "checkpoints")
