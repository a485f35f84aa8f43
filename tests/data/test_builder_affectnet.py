"""AffectNet builder: CSV release (cropped, full) and npy release on miniature copies."""

import hashlib

import numpy as np
import PIL.Image
import pytest

from ferjax.data.builders import common
from ferjax.data.builders.affectnet import Affectnet, AffectnetConfig

from . import mock_data

HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
          "expression,valence,arousal")
LANDMARKS = ";".join(f"{v:.2f}" for v in np.arange(136) * 0.5)


def hexname(key: str) -> str:
  return hashlib.sha224(key.encode()).hexdigest()  # 56 hex digits, like AffectNet's


def face_image(path, key, box, size=(40, 30)):
  """A black image with the face box filled with colour_of(key)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  image = PIL.Image.new("RGB", size)
  x, y, w, h = box
  image.paste(mock_data.color_of(key), (x, y, x + w, y + h))
  image.save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=98)


def row(sub_path, box, expression, valence="0.5", arousal="-0.25", box_text=None):
  box_text = box_text or ",".join(map(str, box))
  return f"{sub_path},{box_text},{LANDMARKS},{expression},{valence},{arousal}"


def write_csv_release(root):
  """Manually_Annotated/ one folder deep; training.csv with header, validation.csv without."""
  base = root / "Manually_Annotated"
  images = base / "Manually_Annotated_Images"
  box = (8, 4, 16, 20)
  train, test = [], []
  for i, expression in enumerate([0, 1, 7, 3]):
    name = hexname(f"train{i}")
    # One file is stored with an upper-case extension, one is a PNG.
    disk_suffix = {1: ".JPG", 2: ".png"}.get(i, ".jpg")
    csv_suffix = ".png" if i == 2 else ".jpg"
    face_image(images / f"{i + 1}" / f"{name}{disk_suffix}", name, box)
    train.append(row(f"{i + 1}/{name}{csv_suffix}", box, expression))
  train.append(row(f"9/{hexname('none')}.jpg", box, 8))
  train.append(row(f"9/{hexname('noface')}.jpg", box, 10))
  train.append(row(f"9/{hexname('null')}.jpg", box, 2, box_text="NULL,NULL,16,20"))
  train.append(row(f"9/{hexname('eleven')}.jpg", box, 11))
  mock_data.write_corrupt(images / "9" / f"{hexname('corrupt')}.jpg")
  train.append(row(f"9/{hexname('corrupt')}.jpg", box, 4))
  train.append(row(f"9/{hexname('missing')}.jpg", box, 5))
  for i, expression in enumerate([6, 5, 4]):
    name = hexname(f"val{i}")
    face_image(images / "20" / f"{name}.jpg", name, box)
    test.append(row(f"20/{name}.jpg", box, expression))
  mock_data.write_text(base / "Manually_Annotated_file_lists/training.csv", [HEADER] + train,
                       crlf=True)
  mock_data.write_text(base / "Manually_Annotated_file_lists/validation.csv", test)
  return root


def test_csv_release_cropped(tmp_path):
  builder = mock_data.build(Affectnet, tmp_path, write_csv_release(tmp_path / "manual"),
                            config="csv")
  assert set(builder.info.splits) == {"train", "test"}
  train = mock_data.read_split(builder, "train")
  assert [mock_data.text(r["id"]) for r in train] == [hexname(f"train{i}") for i in range(4)]
  assert [int(r["label"]) for r in train] == [0, 1, 7, 3]
  assert [int(r["native_label"]) for r in train] == [0, 1, 7, 3]
  for record in train:
    assert mock_data.size(record["image"]) == (16, 20)
    mock_data.assert_color(record["image"], mock_data.text(record["id"]))
    np.testing.assert_array_equal(record["face_box"], [8, 4, 16, 20])
    np.testing.assert_allclose(record["landmarks"], np.arange(136) * 0.5)
    assert record["valence"] == pytest.approx(0.5) and record["arousal"] == pytest.approx(-0.25)
  assert mock_data.pixel(train[2]["image"]).tolist() == list(
      mock_data.color_of(hexname("train2")))  # PNG source stays lossless PNG
  test = mock_data.read_split(builder, "test")
  assert [int(r["label"]) for r in test] == [6, 5, 4]
  report = builder.report
  assert report.counts["train"] == [1, 1, 0, 1, 0, 0, 0, 1]
  assert report.class_names[7] == "contempt"
  assert report.excluded["train"] == {"expression 8 (none)": 1, "expression 10 (no-face)": 1}
  reasons = {item: reason for _, item, reason in report.skipped}
  assert "non-numeric face box" in reasons["training.csv:8"]
  assert "unknown expression 11" in reasons["training.csv:9"]
  assert "undecodable" in reasons[hexname("corrupt")]
  assert "missing image" in reasons[hexname("missing")]
  assert len(report.skipped) == 4


def test_csv_release_full_and_margin(tmp_path):
  manual = write_csv_release(tmp_path / "manual")
  full = mock_data.read_split(mock_data.build(Affectnet, tmp_path, manual, config="csv_full"),
                              "test")
  shipped = manual / "Manually_Annotated/Manually_Annotated_Images/20" / f"{hexname('val0')}.jpg"
  assert full[0]["image"] == shipped.read_bytes()  # the file's bytes as shipped
  margin = AffectnetConfig(name="csv_margin50", crop_margin=0.5)
  cropped = mock_data.read_split(mock_data.build(Affectnet, tmp_path, manual, config=margin),
                                 "test")
  # Box (8, 4, 16, 20) grown by 8 and 10 pixels per side, clipped to the 40x30 image.
  assert mock_data.size(cropped[0]["image"]) == (32, 30)


def test_csv_ran_subsets(tmp_path):
  manual = write_csv_release(tmp_path / "manual")
  v0, v1, v2 = (hexname(f"val{i}") for i in range(3))
  mock_data.write_text(manual / "AffectNet_dir/pose_30_affectnet_list.txt",
                       [f"6/{v0}.jpg", f"5/{v1}.jpg", f"6/{v0}.jpg"])
  mock_data.write_text(manual / "AffectNet_dir/pose_45_affectnet_list.txt", [f"4/{v2}/8.jpg"])
  mock_data.write_text(manual / "AffectNet_dir/occlusion_affectnet_list.txt",
                       [f"val/7/{v1}/"])
  builder = mock_data.build(Affectnet, tmp_path, manual, config="csv")
  pose30 = mock_data.read_split(builder, "test_pose30")
  assert [mock_data.text(r["id"]) for r in pose30] == [v0, v1, v0]
  assert [bool(r["duplicate"]) for r in pose30] == [False, False, True]
  assert [int(r["label"]) for r in mock_data.read_split(builder, "test_pose45")] == [4]
  occlusion = mock_data.read_split(builder, "test_occlusion")
  assert int(occlusion[0]["label"]) == 7 and int(occlusion[0]["parent_label"]) == 5


def write_npy_release(root):
  for split, expressions in (("train_set", [3, 7, 0]), ("val_set", [1, 2])):
    for i, expression in enumerate(expressions):
      key = str(10 - i)  # numeric order differs from name order
      mock_data.write_image(root / split / "images" / f"{key}.jpg", f"{split}{key}")
      ann = root / split / "annotations"
      ann.mkdir(parents=True, exist_ok=True)
      np.save(ann / f"{key}_exp.npy", np.array(str(expression)))
      np.save(ann / f"{key}_val.npy", np.array(0.25))
      np.save(ann / f"{key}_aro.npy", np.array(-0.5))
      np.save(ann / f"{key}_lnd.npy", np.arange(136, dtype=np.float64))
  mock_data.write_image(root / "train_set/images/99.jpg")  # no annotations
  return root


def test_npy_release(tmp_path):
  builder = mock_data.build(Affectnet, tmp_path, write_npy_release(tmp_path / "manual"),
                            config="npy")
  train = mock_data.read_split(builder, "train")
  assert [mock_data.text(r["id"]) for r in train] == ["8", "9", "10"]
  assert [int(r["label"]) for r in train] == [0, 7, 3]
  mock_data.assert_color(train[0]["image"], "train_set8")
  assert train[0]["valence"] == pytest.approx(0.25)
  np.testing.assert_allclose(train[0]["landmarks"], np.arange(136))
  assert [int(r["label"]) for r in mock_data.read_split(builder, "test")] == [2, 1]
  assert [(item, "missing file" in reason) for _, item, reason in builder.report.skipped] == [
      ("99", True)]


def test_wrong_layout(tmp_path):
  (tmp_path / "manual/Images").mkdir(parents=True)
  with pytest.raises(common.LayoutError, match="Manually_Annotated_file_lists/training.csv"):
    mock_data.build(Affectnet, tmp_path, tmp_path / "manual", config="csv")
  with pytest.raises(common.LayoutError, match="train_set/images"):
    mock_data.build(Affectnet, tmp_path, tmp_path / "manual", config="npy")
