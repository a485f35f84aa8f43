"""RAF-DB builder on a miniature copy of the `basic/` layout."""

import pytest

from ferjax.data.builders import common
from ferjax.data.builders.rafdb import Rafdb, native_to_canonical

from . import mock_data

LIST = "basic/EmoLabel/list_patition_label.txt"
# (name, native label) in list-file order; natives 1..7 = Su Fe Di Ha Sa An Ne.
ROWS = [("train_00001.jpg", 5), ("train_00002.jpg", 5), ("train_00003.jpg", 4),
        ("train_00004.jpg", 7), ("train_00005.jpg", 1), ("test_0001.jpg", 5),
        ("test_0002.jpg", 1), ("test_0003.jpg", 4), ("test_0004.jpg", 6)]


def write_rafdb(root, flat_dir=None):
  """The list file (LF, single spaces) plus aligned JPEGs; returns manual_dir."""
  lines = [f"{name} {label}" for name, label in ROWS]
  # Dirty rows: an unknown label, a malformed line, a missing and a corrupt image.
  lines += ["train_00006.jpg 9", "train_00007.jpg", "train_00008.jpg 2", "test_0005.jpg 3"]
  mock_data.write_text(root / LIST, lines)
  images = flat_dir or root / "basic/Image/aligned"
  for name, _ in ROWS:
    mock_data.write_image(images / name.replace(".jpg", "_aligned.jpg"), name[:-4])
  mock_data.write_corrupt(images / "test_0005_aligned.jpg")
  mock_data.write_image(root / "basic/Image/original/train_00001.jpg")  # ignored
  return root


def test_native_to_canonical():
  # The first training line: `train_00001.jpg 5` (native sad) -> canonical 2 (sad).
  assert native_to_canonical(5) == 2
  assert [native_to_canonical(n) for n in range(1, 8)] == [3, 4, 5, 1, 2, 6, 0]
  with pytest.raises(ValueError):
    native_to_canonical(0)


def test_build_and_read(tmp_path, monkeypatch):
  monkeypatch.setattr(Rafdb, "EXAMPLES_PER_SHARD", 2)  # order must hold across shards
  builder = mock_data.build(Rafdb, tmp_path, write_rafdb(tmp_path / "manual"))
  assert set(builder.info.splits) == {"train", "test"}
  assert builder.info.splits["train"].num_shards == 3
  train = mock_data.read_split(builder, "train")
  test = mock_data.read_split(builder, "test")
  # Name order, canonical labels; the dirty rows are not written.
  assert [mock_data.text(r["id"]) for r in train] == [
      "train_00001", "train_00002", "train_00003", "train_00004", "train_00005"]
  assert [int(r["label"]) for r in train] == [2, 2, 1, 0, 3]
  assert [int(r["native_label"]) for r in train] == [5, 5, 4, 7, 1]
  assert [int(r["label"]) for r in test] == [2, 3, 1, 6]
  for record in train + test:
    mock_data.assert_color(record["image"], mock_data.text(record["id"]))
    assert int(record["parent_label"]) == int(record["label"])
    assert int(record["occlusion"]) == -1 and not record["duplicate"]
  report = builder.report
  assert report.class_names[:3] == ("neutral", "happy", "sad")
  assert report.counts["train"] == [1, 1, 2, 1, 0, 0, 0]
  reasons = {item: reason for _, item, reason in report.skipped}
  assert set(reasons) == {f"{LIST}:10", f"{LIST}:11", "train_00008", "test_0005"}
  assert "unknown label 9" in reasons[f"{LIST}:10"]
  assert "malformed" in reasons[f"{LIST}:11"]
  assert "missing file" in reasons["train_00008"]
  assert "undecodable" in reasons["test_0005"]
  saved = common.BuildReport.from_json(
      (builder.data_path / common.REPORT_FILE).read_text())
  assert saved.counts == report.counts and saved.skipped == report.skipped


def test_flat_aligned_dir_and_ran_subsets(tmp_path):
  manual = tmp_path / "manual"
  write_rafdb(manual, flat_dir=tmp_path / "flat")
  ran = tmp_path / "ran"
  # RAN lists: class prefixes are RAF 0-based (0 Su ... 6 Ne); one list uses CRLF.
  mock_data.write_text(ran / "RAF_DB_dir/val_raf_db_list.txt",
                       ["4/test_0001_aligned.jpg", "0/test_0002_aligned.jpg",
                        "4/test_0001_aligned.jpg", "x/bad"])
  mock_data.write_text(ran / "RAF_DB_dir/rafdb_occlusion_list.txt",
                       ["test_0003_aligned 5 2", "test_0004_aligned 5 4"], crlf=True)
  builder = mock_data.build(Rafdb, tmp_path, manual, aligned_dir=str(tmp_path / "flat"),
                            ran_dir=str(ran))
  assert set(builder.info.splits) == {"train", "test", "test_pose30", "test_occlusion"}
  pose = mock_data.read_split(builder, "test_pose30")
  assert [mock_data.text(r["id"]) for r in pose] == ["test_0001", "test_0002", "test_0001"]
  assert [int(r["label"]) for r in pose] == [2, 3, 2]
  assert [bool(r["duplicate"]) for r in pose] == [False, False, True]
  mock_data.assert_color(pose[1]["image"], "test_0002")
  occlusion = mock_data.read_split(builder, "test_occlusion")
  # The list's class (5 = anger) is the label; the parent's label is kept beside it.
  assert [int(r["label"]) for r in occlusion] == [6, 6]
  assert [int(r["parent_label"]) for r in occlusion] == [1, 6]
  assert [int(r["occlusion"]) for r in occlusion] == [2, 4]
  assert any("val_raf_db_list.txt:4" == item for _, item, _ in builder.report.skipped)


def test_ran_missing_key_is_an_error(tmp_path):
  manual = write_rafdb(tmp_path / "manual")
  mock_data.write_text(manual / "RAF_DB_dir/val_raf_db_list_45.txt",
                       ["0/test_0002_aligned.jpg", "1/test_0999_aligned.jpg",
                        "1/test_0998_aligned.jpg"])
  with pytest.raises(common.AnnotationError, match="2 key.*test_0999 test_0998"):
    mock_data.build(Rafdb, tmp_path, manual)


def test_wrong_layout_names_expected_path(tmp_path):
  manual = tmp_path / "manual"
  mock_data.write_image(manual / "Image/aligned/train_00001_aligned.jpg")
  with pytest.raises(common.LayoutError, match="list_patition_label.txt"):
    mock_data.build(Rafdb, tmp_path, manual)
