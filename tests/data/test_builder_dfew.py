"""DFEW builder: every clip once in `all` with its test fold; fold helpers; list files."""

import numpy as np
import pytest

from ferjax.data.builders import common
from ferjax.data.builders.dfew import Dfew, fold_filter, fold_indices, native_to_canonical

from . import mock_data

SPLITS = "DFEW/EmoLabel_DataSplit"
CLIPS = "DFEW/Clip/clip_224x224"
# clip id -> (official label, test fold, frame file names)
GOOD = {1: (1, 1, ["1.jpg", "2.jpg", "10.jpg"]), 2: (7, 2, ["a.jpg", "b.jpg"]),
        10: (3, 3, ["x.jpg"]), 100: (4, 4, ["f1.jpg", "f2.jpg"]), 1000: (6, 5, ["0.jpg"])}


def write_dfew(root):
  folds = {k: [] for k in range(1, 6)}
  for clip, (label, fold, frames) in GOOD.items():
    folds[fold].append(f"{clip},{label}")
    for frame in frames:
      mock_data.write_image(root / CLIPS / f"{clip:05d}" / frame, f"{clip}/{frame}")
  mock_data.write_image(root / CLIPS / "00001" / "thumb.png")  # not a *.jpg frame
  folds[1].append("3,2")                                      # no clip folder
  folds[2].append("4,5")                                      # a corrupt frame
  mock_data.write_image(root / CLIPS / "00004" / "1.jpg")
  mock_data.write_corrupt(root / CLIPS / "00004" / "2.jpg")
  folds[3].append("5,5")                                      # empty clip folder
  (root / CLIPS / "00005").mkdir(parents=True)
  folds[4].append("6,9")                                      # unknown label
  folds[5].append("clip7,1")                                  # malformed id
  for fold, rows in folds.items():
    mock_data.write_text(root / SPLITS / "test(single-labeled)" / f"set_{fold}.csv",
                         ["video_name,label"] + rows, crlf=fold % 2 == 0)
    mock_data.write_text(root / SPLITS / "train(single-labeled)" / f"set_{fold}.csv",
                         ["video_name,label"])
  return root


def test_native_to_canonical():
  assert [native_to_canonical(n) for n in range(1, 8)] == [1, 2, 0, 6, 3, 5, 4]


def test_official(tmp_path):
  builder = mock_data.build(Dfew, tmp_path, write_dfew(tmp_path / "manual"))
  assert set(builder.info.splits) == {"all_folds"}
  records = mock_data.read_split(builder, "all_folds")
  assert [mock_data.text(r["id"]) for r in records] == ["00001", "00002", "00010", "00100",
                                                         "01000"]
  assert [int(r["label"]) for r in records] == [1, 4, 0, 6, 5]
  assert [int(r["native_label"]) for r in records] == [1, 7, 3, 4, 6]
  assert [int(r["test_fold"]) for r in records] == [1, 2, 3, 4, 5]
  assert [int(r["num_frames"]) for r in records] == [3, 2, 1, 2, 1]
  # All *.jpg frames in lexicographic file-name order: 1, 10, 2.
  for frame, name in zip(records[0]["frames"], ["1.jpg", "10.jpg", "2.jpg"]):
    mock_data.assert_color(frame, f"1/{name}")
  assert builder.info.metadata["test_fold"] == {"all_folds": [1, 2, 3, 4, 5]}
  reasons = {item: reason for _, item, reason in builder.report.skipped}
  assert "missing frame folder" in reasons["00003"]
  assert "undecodable" in reasons["00004"]
  assert "no frames" in reasons["00005"]
  assert "DFEW labels are 1..7" in reasons["test(single-labeled)/set_4.csv:3"]
  assert "malformed" in reasons["test(single-labeled)/set_5.csv:3"]
  assert builder.report.images == 9
  # The fold helpers agree with each other and with the stored feature.
  np.testing.assert_array_equal(fold_indices(builder.info, 2, train=False), [1])
  np.testing.assert_array_equal(fold_indices(builder.info, 2, train=True), [0, 2, 3, 4])
  keep = fold_filter(2, train=True)
  assert [keep(r) for r in records] == [True, False, True, True, True]
  with pytest.raises(ValueError, match="fold must be in 1..5"):
    fold_filter(6, train=True)


@pytest.mark.parametrize("config, crlf", [("lstpnet", True), ("former_dfer", False)])
def test_list_files(tmp_path, config, crlf):
  manual = write_dfew(tmp_path / "manual")
  lists = tmp_path / "lists"
  base = "/home/someone/DFEW/Clip/clip_224x224"
  mock_data.write_text(lists / "DFEW_set_1_test.txt",
                       [f"{base}/00001 2 0", f"{base}/00002 5 6"], crlf=crlf)
  mock_data.write_text(lists / "DFEW_set_3_test.txt", [f"{base}/00010 1 2", "broken"],
                       crlf=crlf)
  # Fold 1's train list: 00010 with another frame count (as Former-DFER's lists for
  # a few clips), 00001 which is in fold 1's own test list, and a clip in no test list.
  mock_data.write_text(lists / "DFEW_set_1_train.txt",
                       [f"{base}/00010 3 2", f"{base}/00001 2 0", f"{base}/00011 4 1"],
                       crlf=crlf)
  files = ",".join(str(lists / f) for f in ["DFEW_set_1_test.txt", "DFEW_set_3_test.txt",
                                            "DFEW_set_1_train.txt"])
  builder = mock_data.build(Dfew, tmp_path, manual, config=config, list_files=files)
  records = mock_data.read_split(builder, "all_folds")
  assert [mock_data.text(r["id"]) for r in records] == ["00001", "00010"]
  assert [int(r["test_fold"]) for r in records] == [1, 3]
  assert [int(r["label"]) for r in records] == [1, 0]  # list order happy, ..., neutral
  # The list's frame count keeps the first frames in lexicographic order.
  assert int(records[0]["num_frames"]) == 2 and len(records[0]["frames"]) == 2
  mock_data.assert_color(records[0]["frames"][1], "1/10.jpg")
  reasons = {item: reason for _, item, reason in builder.report.skipped}
  assert "the list file says 5" in reasons["00002"]
  assert "malformed" in reasons["DFEW_set_3_test.txt:2"]
  assert builder.report.notes == [
      "DFEW_set_1_train.txt: 1 clip(s) whose frame count disagrees with the test lists (the "
      "test lists are used): 00010 (train 3, test 1)",
      "DFEW_set_1_train.txt: 2 clip(s) whose fold disagrees with the test lists (the test "
      "lists are used): 00001 (in this fold's test list), 00011 (in no test list)"]


def test_layout_errors(tmp_path):
  manual = tmp_path / "manual"
  mock_data.write_image(manual / "DFEW/clips/00001/1.jpg")
  with pytest.raises(common.LayoutError, match="Clip/clip_224x224"):
    mock_data.build(Dfew, tmp_path, manual)
  manual = write_dfew(tmp_path / "manual2")
  with pytest.raises(common.LayoutError, match="list_files"):
    mock_data.build(Dfew, tmp_path, manual, config="lstpnet")


def test_pipeline_selects_folds_from_stored_columns(tmp_path):
  from configs import default  # pylint: disable=g-import-not-at-top
  from ferjax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = mock_data.build(Dfew, tmp_path, write_dfew(tmp_path / "manual"))
  assert builder.info.metadata["num_frames"] == {"all_folds": [3, 2, 1, 2, 1]}
  dataset = default.get_config().dataset
  dataset.update(name="dfew/official", data_dir=str(tmp_path / "data"), kind="clip",
                 train_split="all_folds", eval_split="all_folds", fold=2, min_frames=2)
  train = pipeline.open_split(dataset, "all_folds", train=True)
  test = pipeline.open_split(dataset, "all_folds", train=False)
  assert train.positions.tolist() == [0, 3] and test.positions.tolist() == [1]
  np.testing.assert_array_equal(train.column("label"), [1, -1, -1, 6, -1])
  train.columns.clear()  # The record-reading fallback agrees.
  np.testing.assert_array_equal(train.column("label"), [1, -1, -1, 6, -1])
