"""FERV39k builder: space-delimited split files, scene metadata, list files."""

import pytest

from ferjax.data.builders import common
from ferjax.data.builders.ferv39k import Ferv39k

from . import mock_data

SETUP = "FERV39k/4_setups/All_scenes"
FRAMES = "FERV39k/2_ClipsforFaceCrop"
CLIPS = {"Action/Sad/0010": 3, "Interview/Happy/0002": 2, "War/Angry/0100": 1,
         "School/Neutral/0001": 2, "Talkshow/Surprise/0007": 1}


def write_ferv39k(root):
  for clip, n in CLIPS.items():
    for i in range(n):
      mock_data.write_image(root / FRAMES / clip / f"{i:04d}.jpg", f"{clip}/{i}")
  mock_data.write_image(root / FRAMES / "Action/Sad/0010/notes.bmp")  # not a *.jpg frame
  mock_data.write_text(root / SETUP / "train_All.csv", [
      "Action/Sad/0010 Sad", "Interview/Happy/0002 Happy", "War/Angry/0100 Angry",
      "Crime/Fear/0003 Fear",            # no frame folder
      "Crime/Fear/0004",                 # malformed
      "Crime/Fear/0005 Scared",          # unknown emotion
      "School/Neutral/0001 Happy"])      # label disagrees with the path
  mock_data.write_text(root / SETUP / "test_All.csv",
                       ["Talkshow/Surprise/0007 Surprise", "School/Neutral/0001 Neutral"])
  return root


def test_official(tmp_path):
  builder = mock_data.build(Ferv39k, tmp_path, write_ferv39k(tmp_path / "manual"))
  train = mock_data.read_split(builder, "train")
  assert [mock_data.text(r["id"]) for r in train] == [
      "Action/Sad/0010", "Interview/Happy/0002", "War/Angry/0100"]
  assert [int(r["label"]) for r in train] == [2, 1, 6]
  assert [mock_data.text(r["scene"]) for r in train] == ["Action", "Interview", "War"]
  assert [mock_data.text(r["native_label"]) for r in train] == ["Sad", "Happy", "Angry"]
  assert [int(r["num_frames"]) for r in train] == [3, 2, 1]
  for i, frame in enumerate(train[0]["frames"]):
    mock_data.assert_color(frame, f"Action/Sad/0010/{i}")
  test = mock_data.read_split(builder, "test")
  assert [int(r["label"]) for r in test] == [3, 0]
  reasons = {item: reason for _, item, reason in builder.report.skipped}
  assert "missing frame folder" in reasons["Crime/Fear/0003"]
  assert "malformed" in reasons["train_All.csv:5"]
  assert "unknown emotion" in reasons["train_All.csv:6"]
  assert "disagrees" in reasons["train_All.csv:7"]
  assert len(reasons) == 4


def test_list_files(tmp_path):
  manual = write_ferv39k(tmp_path / "manual")
  base = "D:\\data\\FERV39k\\2_ClipsforFaceCrop"
  # LSTPNet order is canonical (2 = sad); Windows paths, CRLF.
  lists = tmp_path / "lists"
  mock_data.write_text(lists / "FERV39k_train.txt",
                       [f"{base}\\Action\\Sad\\0010 2 2", f"{base}\\War\\Angry\\0100 1 6"],
                       crlf=True)
  mock_data.write_text(lists / "FERV39k_test.txt", [f"{base}\\School\\Neutral\\0001 2 0"],
                       crlf=True)
  builder = mock_data.build(Ferv39k, tmp_path, manual, config="lstpnet",
                            list_files=[str(lists / "FERV39k_train.txt"),
                                        str(lists / "FERV39k_test.txt")])
  train = mock_data.read_split(builder, "train")
  assert [int(r["label"]) for r in train] == [2, 6]
  assert [int(r["num_frames"]) for r in train] == [2, 1]
  assert [int(r["label"]) for r in mock_data.read_split(builder, "test")] == [0]
  # Former-DFER lists use DFEW's order (1 = sad, 3 = anger).
  mock_data.write_text(lists / "FERV39K_train.txt", ["/x/Action/Sad/0010 3 1",
                                                     "/x/War/Angry/0100 1 3"])
  former = mock_data.build(Ferv39k, tmp_path, manual, config="former_dfer",
                           list_files=str(lists / "FERV39K_train.txt"))
  assert set(former.info.splits) == {"train"}
  assert [int(r["label"]) for r in mock_data.read_split(former, "train")] == [2, 6]


def test_wrong_layout(tmp_path):
  manual = tmp_path / "manual"
  mock_data.write_text(manual / SETUP / "train_All.csv", ["Action/Sad/0010 Sad"])
  with pytest.raises(common.LayoutError, match="2_ClipsforFaceCrop"):
    mock_data.build(Ferv39k, tmp_path, manual)
