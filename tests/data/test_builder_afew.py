"""AFEW builder: user-extracted frame folders, Val as test, list files."""

import pytest

from ferjax.data.builders import common
from ferjax.data.builders.afew import Afew

from . import mock_data


def write_afew(root):
  clips = {"Train_AFEW/Angry/000149120": ["1.png", "2.png", "11.png"],
           "Train_AFEW/Happy/000200000": ["a.jpg"],
           "Val_AFEW/Sad/000300000": ["f0.jpg", "f1.jpg"],
           "Val_AFEW/Surprise/000400000": ["x.jpg"]}
  for clip, frames in clips.items():
    for frame in frames:
      mock_data.write_image(root / "AFEW" / clip / frame, f"{clip}/{frame}")
  (root / "AFEW/Train_AFEW/Happy/000500000.avi").write_bytes(b"RIFF")  # not extracted
  mock_data.write_image(root / "AFEW/Train_AFEW/Fear/000600000/1.jpg")
  mock_data.write_corrupt(root / "AFEW/Train_AFEW/Fear/000600000/2.jpg")
  (root / "AFEW/Val_AFEW/Contempt").mkdir(parents=True)
  return root


def test_official(tmp_path):
  builder = mock_data.build(Afew, tmp_path, write_afew(tmp_path / "manual"))
  assert set(builder.info.splits) == {"train", "test"}
  train = mock_data.read_split(builder, "train")
  assert [mock_data.text(r["id"]) for r in train] == ["Angry/000149120", "Happy/000200000"]
  assert [int(r["label"]) for r in train] == [6, 1]
  # Any image files, lexicographic: 1.png, 11.png, 2.png.
  for frame, name in zip(train[0]["frames"], ["1.png", "11.png", "2.png"]):
    mock_data.assert_color(frame, f"Train_AFEW/Angry/000149120/{name}")
  test = mock_data.read_split(builder, "test")
  assert [int(r["label"]) for r in test] == [2, 3]
  assert [int(r["num_frames"]) for r in test] == [2, 1]
  reasons = {item: reason for _, item, reason in builder.report.skipped}
  assert "not a frame folder" in reasons["Happy/000500000.avi"]
  assert "undecodable" in reasons["Fear/000600000"]
  assert "not an emotion folder" in reasons["Contempt"]


def test_former_dfer_lists(tmp_path):
  manual = write_afew(tmp_path / "manual")
  # Former-DFER: AFEW_Face folder names and DFEW's label order (0 happy, 3 anger, 1 sad).
  lists = tmp_path / "lists"
  mock_data.write_text(lists / "AFEW_train.txt", ["/d/AFEW_Face/train/Anger/000149120 2 3",
                                                  "/d/AFEW_Face/train/Happiness/000200000 1 0",
                                                  "/d/AFEW_Face/train/Happiness/000149120 1 3"])
  mock_data.write_text(lists / "AFEW_validation.txt", ["/d/AFEW_Face/val/Sadness/000300000 2 1"])
  files = f"{lists / 'AFEW_train.txt'},{lists / 'AFEW_validation.txt'}"
  builder = mock_data.build(Afew, tmp_path, manual, config="former_dfer", list_files=files)
  train = mock_data.read_split(builder, "train")
  assert [mock_data.text(r["id"]) for r in train] == ["Angry/000149120", "Happy/000200000"]
  assert [int(r["label"]) for r in train] == [6, 1]
  assert [int(r["num_frames"]) for r in train] == [2, 1]
  assert [int(r["label"]) for r in mock_data.read_split(builder, "test")] == [2]
  assert "disagrees" in dict((i, r) for _, i, r in builder.report.skipped)["AFEW_train.txt:3"]


@pytest.mark.parametrize("folder_names", ["bare", "former_dfer"])
def test_former_dfer_names_match_bare_and_prefixed_folders(tmp_path, folder_names):
  # Former-DFER's published lines name <split>_<label>_<clip id> folders; AFEW's own
  # extraction has bare clip ids. Either folder is found; the record id is the bare id.
  manual = tmp_path / "manual"
  for split, emotion, name in [("Train_AFEW", "Angry", "0_3_011756043"),
                               ("Train_AFEW", "Angry", "0_2_001343200"),
                               ("Val_AFEW", "Happy", "1_0_000752320")]:
    folder = name if folder_names == "former_dfer" else name.split("_")[-1]
    for frame in ("a.jpg", "b.jpg"):
      mock_data.write_image(manual / split / emotion / folder / frame, f"{name}/{frame}")
  lists = tmp_path / "lists"
  base = "/home/user/datasets/AFEW_Face"
  mock_data.write_text(lists / "AFEW_train.txt", [f"{base}/train/Anger/0_3_011756043 2 3",
                                                  f"{base}/train/Anger/0_2_001343200 1 3"])
  mock_data.write_text(lists / "AFEW_validation.txt",
                       [f"{base}/validation/Happiness/1_0_000752320 2 0"])
  files = [str(lists / "AFEW_train.txt"), str(lists / "AFEW_validation.txt")]
  builder = mock_data.build(Afew, tmp_path, manual, config="former_dfer", list_files=files)
  train = mock_data.read_split(builder, "train")
  assert [mock_data.text(r["id"]) for r in train] == ["Angry/011756043", "Angry/001343200"]
  assert [int(r["num_frames"]) for r in train] == [2, 1]
  mock_data.assert_color(train[0]["frames"][1], "0_3_011756043/b.jpg")
  test = mock_data.read_split(builder, "test")
  assert [mock_data.text(r["id"]) for r in test] == ["Happy/000752320"]
  assert builder.report.skipped == []


def test_unextracted_videos_are_a_layout_error(tmp_path):
  manual = tmp_path / "manual"
  for split in ("Train_AFEW", "Val_AFEW"):
    (manual / split / "Angry").mkdir(parents=True)
    (manual / split / "Angry" / "000149120.avi").write_bytes(b"RIFF")
  with pytest.raises(common.LayoutError, match="Train_AFEW/<Emotion>/<clip id>/"):
    mock_data.build(Afew, tmp_path, manual)
