"""Builds synthetic_fer/images_small and clips_small and reads them back with Grain."""

import io

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ferjax.data import builders  # noqa: F401  (registers synthetic_fer)
from ferjax.data.builders.synthetic_fer import SyntheticFer
from ferjax.data.synthetic import generate
from ferjax.data.synthetic.config import CONFIGS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  for name in ("images_small", "clips_small"):
    SyntheticFer(config=name, data_dir=str(path), num_workers=0).download_and_prepare()
  return str(path)


def _decode(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _records(data_dir: str, name: str, split: str) -> list[dict]:
  source = tfds.data_source(f"synthetic_fer/{name}", split=split, data_dir=data_dir,
                            download=False)
  return list(grain.MapDataset.source(source))


def test_images_small_read_back(data_dir):
  cfg = CONFIGS["images_small"]
  builder = tfds.builder("synthetic_fer/images_small", data_dir=data_dir)
  assert builder.info.splits["train"].num_examples == cfg.num_train
  assert builder.info.features["label"].names == ["neutral", "happy", "sad", "surprise",
                                                  "fear", "disgust", "anger"]
  dataset = (grain.MapDataset.source(builder.as_data_source("train"))
             .map(lambda r: {"image": _decode(r["image"]), "label": r["label"]}).batch(50))
  batches = list(dataset)
  assert len(batches) == cfg.num_train // 50
  assert batches[0]["image"].shape == (50, 32, 32, 3) and batches[0]["image"].dtype == np.uint8
  records = _records(data_dir, "images_small", "test")
  assert len(records) == cfg.num_test
  # Records are in index order and equal to what the generator makes.
  assert [r["id"] for r in records[:3]] == [b"test_000000", b"test_000001", b"test_000002"]
  clean, noisy = generate.label_plan(cfg, "test")
  assert [r["label"] for r in records] == noisy.tolist() == clean.tolist()
  assert records[4]["image"] == generate.image_example(cfg, "test", 4, clean[4], noisy[4])["image"]
  for r in records:
    assert r["soft_label"].shape == (7,) and abs(r["soft_label"].sum() - 1) < 1e-6
    assert r["native_label"] == r["clean_label"]
    assert -90 <= r["yaw"] <= 90 and -30 <= r["pitch"] <= 30


def test_identities_disjoint_between_splits(data_dir):
  train = {r["identity"] for r in _records(data_dir, "images_small", "train")}
  test = {r["identity"] for r in _records(data_dir, "images_small", "test")}
  assert train and test and not train & test


def test_class_not_readable_from_global_colour_statistics(data_dir):
  """Logistic regression on colour histograms + channel means/stds stays near chance."""

  def statistics(records):
    flat = np.stack([_decode(r["image"]) for r in records]).astype(np.float32)
    flat = flat.reshape(len(records), -1, 3)
    hist = [np.concatenate([np.histogram(f[:, c], bins=16, range=(0, 256))[0] for c in range(3)])
            for f in flat]
    return np.concatenate([np.array(hist) / flat.shape[1], flat.mean(1), flat.std(1)], 1)

  train = _records(data_dir, "images_small", "train")
  test = _records(data_dir, "images_small", "test")
  classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
  classifier.fit(statistics(train), [r["label"] for r in train])
  assert classifier.score(statistics(test), [r["label"] for r in test]) < 1 / 7 + 0.1


def test_clips_small_read_back(data_dir):
  cfg = CONFIGS["clips_small"]
  records = _records(data_dir, "clips_small", "train")
  assert len(records) == cfg.num_train
  assert len(_records(data_dir, "clips_small", "test")) == cfg.num_test
  windowed = 0
  for r in records[:40]:
    frames = np.stack([_decode(f) for f in r["frames"]])
    assert frames.shape == (16, 32, 32, 3) and r["num_frames"] == 16
    assert 0 <= r["apex_start"] < r["apex_end"] <= 16
    windowed += bool(r["windowed"])
    if r["windowed"]:
      assert 2 <= r["apex_end"] - r["apex_start"] <= 4
  assert 0 < windowed < 40
