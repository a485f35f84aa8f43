"""SFEW 2.0 builder on a miniature copy of the aligned-faces layout."""

import pytest

from ferjax.data.builders import common
from ferjax.data.builders.sfew import Sfew

from . import mock_data

TRAIN = "SFEW_2/Train/Train_Aligned_Faces"
VAL = "SFEW_2/Val/Val_Aligned_Faces_new"


def write_sfew(root):
  for name in ["Airheads_000519240_00000005", "Angry_0001_00000001"]:
    mock_data.write_image(root / TRAIN / "Angry" / f"{name}.png", f"Angry/{name}")
  mock_data.write_image(root / TRAIN / "Happy" / "Hitch_000100_00000002.png",
                        "Happy/Hitch_000100_00000002")
  mock_data.write_image(root / TRAIN / "Neutral" / "Ghost_000200_00000001.png",
                        "Neutral/Ghost_000200_00000001")
  mock_data.write_corrupt(root / TRAIN / "Sad" / "Broken_000300_00000001.png")
  mock_data.write_image(root / TRAIN / "Confused" / "Odd_000400_00000001.png")
  mock_data.write_image(root / VAL / "Surprise" / "Sky_000500_00000001.png",
                        "Surprise/Sky_000500_00000001")
  mock_data.write_image(root / VAL / "Fear" / "Dark_000600_00000003.png",
                        "Fear/Dark_000600_00000003")
  mock_data.write_image(root / "SFEW_2/Test/Test_Aligned_Faces/Unknown_0001.png")
  return root


def test_build_and_read(tmp_path):
  builder = mock_data.build(Sfew, tmp_path, write_sfew(tmp_path / "manual"))
  assert set(builder.info.splits) == {"train", "validation"}
  train = mock_data.read_split(builder, "train")
  assert [mock_data.text(r["id"]) for r in train] == [
      "Angry/Airheads_000519240_00000005", "Angry/Angry_0001_00000001",
      "Happy/Hitch_000100_00000002", "Neutral/Ghost_000200_00000001"]
  assert [int(r["label"]) for r in train] == [6, 6, 1, 0]
  assert [mock_data.text(r["native_label"]) for r in train] == [
      "Angry", "Angry", "Happy", "Neutral"]
  for record in train:
    mock_data.assert_color(record["image"], mock_data.text(record["id"]))
  validation = mock_data.read_split(builder, "validation")
  assert [int(r["label"]) for r in validation] == [4, 3]
  reasons = {item: reason for _, item, reason in builder.report.skipped}
  assert set(reasons) == {"Confused", "Sad/Broken_000300_00000001"}
  assert "undecodable" in reasons["Sad/Broken_000300_00000001"]
  assert builder.report.counts["train"] == [1, 1, 0, 0, 0, 0, 2]


def test_wrong_layout(tmp_path):
  manual = tmp_path / "manual"
  mock_data.write_image(manual / "Train/Angry/a.png")
  with pytest.raises(common.LayoutError, match="Train/Train_Aligned_Faces"):
    mock_data.build(Sfew, tmp_path, manual)
