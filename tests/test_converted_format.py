"""ferjax's converted-weights directory format (ferjax.convert.saved)."""

import numpy as np
import pytest

from ferjax.convert import saved


def test_round_trip_from_a_relative_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  arrays = {"conv1/kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
            "layer1/0/bn1/scale": np.ones(3, np.float32)}
  saved.save("converted", arrays, {"family": "resnet", "arch": "resnet18"})
  restored, meta = saved.restore(str(tmp_path / "converted"))
  assert restored.keys() == arrays.keys()
  for key, array in arrays.items():
    np.testing.assert_array_equal(restored[key], array)
  assert meta == {"format": saved.FORMAT, "family": "resnet", "arch": "resnet18"}
  assert saved.read_converted("converted").arrays["conv1/kernel"][0] == "conv1/kernel"
  with pytest.raises(ValueError, match=f"{tmp_path}/converted: already exists"):
    saved.save("converted", arrays, {})


def test_cloud_paths_stay_cloud_paths():
  # os.path.abspath would turn gs://b/w into CWD/gs:/b/w, a local path.
  assert str(saved._absolute("gs://bucket/weights")) == "gs://bucket/weights"
  assert saved._absolute("weights").is_absolute()


def test_errors_name_the_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}/missing: no such directory"):
    saved.restore(str(tmp_path / "missing"))
  (tmp_path / "other").mkdir()
  with pytest.raises(ValueError, match="other: not a converted ferjax checkpoint"):
    saved.restore(str(tmp_path / "other"))
