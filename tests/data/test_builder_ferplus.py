"""FERPlus: the official majority rule, vote sources, duplicates, PNG folders, RAN subsets."""

import numpy as np
import PIL.Image
import pytest

from ferjax.data.builders import common
from ferjax.data.builders.ferplus import (Ferplus, label_from_votes, majority_label,
                                          soft_label)

from . import mock_data

NEW_HEADER = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,"
              "contempt,unknown,NF")
# fer2013new.csv rows: (Usage, name, votes). Row i is pixel row i of fer2013.csv.
NEW_ROWS = [
    ("Training", "fer0000000.png", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),            # not a face
    ("Training", "fer0000001.png", [0, 0, 0, 8, 0, 0, 2, 0, 0, 0]),
    ("Training", "fer0000002.png", [0, 0, 10, 0, 0, 0, 0, 0, 0, 0]),  # replaced by row 5
    ("Training", "fer0000003.png", [3, 0, 0, 3, 0, 0, 0, 0, 4, 0]),
    ("Training", "fer0000002.png", [0, 0, 0, 0, 9, 0, 0, 0, 1, 0]),
    ("Training", "fer0000007.png", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # bad pixels
    ("PublicTest", "fer0000004.png", [0, 0, 0, 0, 0, 0, 0, 10, 0, 0]),
    ("PrivateTest", "fer0000005.png", [0, 0, 0, 0, 0, 8, 0, 0, 2, 0]),
    ("PrivateTest", "fer0000006.png", [0, 0, 0, 0, 0, 0, 7, 0, 3, 0]),
]
# label.csv votes where they differ from fer2013new.csv (as for fer0000716).
LABEL_CSV_VOTES = {"fer0000001": [1, 0, 0, 8, 0, 0, 1, 0, 0, 0],
                   "fer0000002": [0, 0, 0, 0, 9, 0, 0, 0, 1, 0]}
SPLIT_DIRS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid",
              "PrivateTest": "FER2013Test"}


def pixel_value(row: int) -> int:
  return 10 + 20 * row


@pytest.mark.parametrize("votes, column", [
    ([1, 0, 0, 8, 0, 0, 1, 0, 0, 0], 3),       # single votes dropped: 8 of 8
    ([5, 0, 0, 1, 1, 0, 0, 0, 3, 0], 0),       # fer0033120 in label.csv: 5 of 8
    ([5, 1, 1, 1, 2, 0, 0, 0, 0, 0], 0),       # 5 of 10 raw, but 5 of 7 after dropping 1s
    ([4, 0, 0, 3, 0, 0, 0, 0, 3, 0], None),    # 4 of 10 is no majority
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None),    # exactly half is no majority
    ([0, 5, 0, 0, 0, 0, 0, 0, 4, 0], 1),       # a 9-vote row: 5 > 4.5
    ([0, 0, 0, 0, 0, 0, 0, 0, 6, 3], 8),       # unknown wins
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], 9),      # not a face
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None),    # every count zeroed
])
def test_majority_label(votes, column):
  assert majority_label(votes) == column


def test_label_rules():
  assert label_from_votes([0, 0, 0, 0, 0, 0, 0, 0, 6, 3], "majority") == (
      None, "majority: unknown")
  assert label_from_votes([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], "majority") == (
      None, "majority: NF")
  no_majority = [3, 0, 0, 3, 0, 0, 0, 0, 4, 0]
  assert label_from_votes(no_majority, "majority")[0] is None
  assert label_from_votes(no_majority, "argmax") == (None, "argmax: unknown")
  assert label_from_votes(no_majority, "distribution") == (0, "")  # first emotion maximum
  assert label_from_votes([0, 3, 0, 3, 0, 0, 0, 0, 0, 0], "argmax") == (1, "")
  assert label_from_votes([2, 0, 0, 0, 0, 0, 0, 0, 3, 5], "distribution")[0] is None
  with pytest.raises(ValueError, match="label rule"):
    label_from_votes(no_majority, "vote")


def test_soft_label_is_canonical_order():
  soft = soft_label([1, 0, 0, 8, 0, 0, 1, 0, 5, 0])
  # neutral 0.1, sadness (canonical 2) 0.8, fear (canonical 4) 0.1; unknown ignored.
  np.testing.assert_allclose(soft, [0.1, 0, 0.8, 0, 0.1, 0, 0, 0], atol=1e-6)


def write_ferplus(root, pixels_csv=True, png_folders=False, fer2013new=True):
  if pixels_csv:
    lines = ["emotion,pixels,Usage"]
    for row, (usage, _, _) in enumerate(NEW_ROWS):
      count = 2303 if row == 6 else 48 * 48
      lines.append(f"0,{' '.join([str(pixel_value(row))] * count)},{usage}")
    mock_data.write_text(root / "fer2013.csv", lines)
  if fer2013new:
    mock_data.write_text(root / "fer2013new.csv",
                         [NEW_HEADER] + [f"{u},{n},{','.join(map(str, v))}"
                                         for u, n, v in NEW_ROWS], crlf=True)
  last = {}
  for row, (usage, name, votes) in enumerate(NEW_ROWS):
    if name:
      last[(usage, name)] = (row, votes)
  label_lines = {usage: [] for usage in SPLIT_DIRS}
  for (usage, name), (row, votes) in sorted(last.items()):
    votes = LABEL_CSV_VOTES.get(name[:-4], votes)
    label_lines[usage].append(f'{name},"(0, 0, 48, 48)",{",".join(map(str, votes))}')
    if png_folders:
      path = root / "data" / SPLIT_DIRS[usage] / name
      path.parent.mkdir(parents=True, exist_ok=True)
      PIL.Image.new("L", (48, 48), pixel_value(row)).save(path)
  label_lines["Training"].append('fer0000099.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0')
  label_lines["Training"].append('fer0000098.png,"(0, 0, 48, 48)",10,0,0')
  for usage, lines in label_lines.items():
    mock_data.write_text(root / "data" / SPLIT_DIRS[usage] / "label.csv", lines)
  return root


def ids(records):
  return [mock_data.text(r["id"]) for r in records]


def test_label_csv_majority(tmp_path):
  builder = mock_data.build(Ferplus, tmp_path, write_ferplus(tmp_path / "manual"))
  assert builder.builder_config.name == "label_csv_majority"
  assert set(builder.info.splits) == {"train", "validation", "test"}
  train = mock_data.read_split(builder, "train")
  assert ids(train) == ["fer0000000", "fer0000001", "fer0000002"]
  # label.csv votes: fer0000001 is sad (FER+ column 3), fer0000002 anger (column 4).
  assert [int(r["label"]) for r in train] == [0, 2, 6]
  assert [int(r["native_label"]) for r in train] == [0, 3, 4]
  np.testing.assert_array_equal(train[1]["votes"], [1, 0, 0, 8, 0, 0, 1, 0, 0, 0])
  np.testing.assert_allclose(train[1]["soft_label"], [0.1, 0, 0.8, 0, 0.1, 0, 0, 0], atol=1e-6)
  # The duplicate name keeps the later row's pixels and index.
  assert [int(r["row"]) for r in train] == [0, 2, 5]
  assert [int(mock_data.pixel(r["image"])) for r in train] == [10, 50, 110]
  assert mock_data.size(train[0]["image"]) == (48, 48)
  assert [int(r["label"]) for r in mock_data.read_split(builder, "validation")] == [7]
  assert [int(r["label"]) for r in mock_data.read_split(builder, "test")] == [5, 4]
  report = builder.report
  assert report.excluded["train"] == {"no image name (not a face)": 1,
                                      "majority: no majority (unknown)": 1}
  reasons = {item: reason for _, item, reason in report.skipped}
  assert "the later row 5 is kept" in reasons["fer2013new.csv row 3"]
  assert "row 6: pixels are not 2304 values" in reasons["fer0000007"]
  assert "no image" in reasons["fer0000099"]
  assert "malformed line" in reasons["FER2013Train/label.csv:7"]
  assert len(report.skipped) == 4


def test_fer2013new_votes_and_distribution(tmp_path):
  manual = write_ferplus(tmp_path / "manual")
  new = mock_data.read_split(
      mock_data.build(Ferplus, tmp_path, manual, config="fer2013new_majority"), "train")
  assert ids(new) == ["fer0000000", "fer0000001", "fer0000002"]
  np.testing.assert_array_equal(new[1]["votes"], [0, 0, 0, 8, 0, 0, 2, 0, 0, 0])
  assert [int(r["label"]) for r in new] == [0, 2, 6]
  dist = mock_data.read_split(
      mock_data.build(Ferplus, tmp_path, manual, config="label_csv_distribution"), "train")
  assert ids(dist) == ["fer0000000", "fer0000001", "fer0000002", "fer0000003"]
  assert int(dist[3]["label"]) == 0


def test_png_folders_and_ran_subsets(tmp_path):
  manual = write_ferplus(tmp_path / "manual", pixels_csv=False, png_folders=True,
                         fer2013new=False)
  mock_data.write_text(manual / "FERplus_dir/pose_30_ferplus_list.txt",
                       ["5/fer0000005.jpg", "6/fer0000006.jpg"])
  mock_data.write_text(manual / "FERplus_dir/jianfei_occlusion_list.txt",
                       ["4_fer0000006.png 8 2"], crlf=True)
  builder = mock_data.build(Ferplus, tmp_path, manual)
  train = mock_data.read_split(builder, "train")
  # Every named image has its PNG here (fer0000007's pixel row is not involved).
  assert ids(train) == ["fer0000000", "fer0000001", "fer0000002", "fer0000007"]
  assert [int(mock_data.pixel(r["image"])) for r in train] == [10, 50, 110, 130]
  assert [int(r["row"]) for r in train] == [-1] * 4  # no fer2013new.csv given
  pose = mock_data.read_split(builder, "test_pose30")
  assert ids(pose) == ["fer0000005", "fer0000006"]
  assert [int(r["label"]) for r in pose] == [5, 4]  # FER+ columns 5, 6 -> canonical
  occlusion = mock_data.read_split(builder, "test_occlusion")
  assert [int(r["label"]) for r in occlusion] == [6] and int(occlusion[0]["occlusion"]) == 2


def test_wrong_layout(tmp_path):
  manual = tmp_path / "manual"
  mock_data.write_text(manual / "fer2013.csv", ["emotion,pixels,Usage"])
  with pytest.raises(common.LayoutError, match="fer2013new.csv"):
    mock_data.build(Ferplus, tmp_path, manual)


def test_row_misalignment_is_an_error(tmp_path):
  manual = write_ferplus(tmp_path / "manual")
  lines = (manual / "fer2013.csv").read_text().splitlines()
  mock_data.write_text(manual / "fer2013.csv", lines[:-1])
  with pytest.raises(common.AnnotationError, match="row-aligned"):
    mock_data.build(Ferplus, tmp_path, manual)


# A PrivateTest name in two fer2013new.csv rows, as fer0033120: a face (row 10), then
# a non-face (row 11); label.csv's one line holds the face's votes.
FACE_VOTES = [5, 0, 0, 1, 1, 0, 0, 0, 3, 0]
NF_VOTES = [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]


def add_repeated_name(manual, png_folders=False):
  rows = [("PrivateTest", "fer0000008.png", FACE_VOTES), ("PrivateTest", "fer0000008.png",
                                                          NF_VOTES)]
  with open(manual / "fer2013new.csv", "ab") as f:
    f.write("".join(f"{u},{n},{','.join(map(str, v))}\r\n" for u, n, v in rows).encode())
  if png_folders:  # the official generator leaves the later row's image
    PIL.Image.new("L", (48, 48), pixel_value(11)).save(manual / "data/FER2013Test/fer0000008.png")
  else:
    with open(manual / "fer2013.csv", "a") as f:
      for row in (10, 11):
        f.write(f"0,{' '.join([str(pixel_value(row))] * 48 * 48)},PrivateTest\n")
  with open(manual / "data/FER2013Test/label.csv", "a") as f:
    f.write(f'fer0000008.png,"(0, 0, 48, 48)",{",".join(map(str, FACE_VOTES))}\n')
  mock_data.write_text(manual / "FERplus_dir/pose_30_ferplus_list.txt",
                       ["5/fer0000005.jpg", "0/fer0000008.jpg"])
  return manual


def test_repeated_name_is_paired_with_the_row_its_votes_belong_to(tmp_path):
  manual = add_repeated_name(write_ferplus(tmp_path / "manual"))
  builder = mock_data.build(Ferplus, tmp_path, manual)
  test = mock_data.read_split(builder, "test")
  assert ids(test) == ["fer0000005", "fer0000006", "fer0000008"]
  # label.csv's votes are the face row's (distance 0 vs 18): its pixels, not the non-face's.
  assert int(test[2]["label"]) == 0 and int(test[2]["row"]) == 10
  assert int(mock_data.pixel(test[2]["image"])) == pixel_value(10)
  assert ids(mock_data.read_split(builder, "test_pose30")) == ["fer0000005", "fer0000008"]
  notes = [n for n in builder.report.notes if n.startswith("fer0000008 occurs")]
  assert notes == [
      f"fer0000008 occurs in fer2013new.csv row 10 {FACE_VOTES}, row 11 {NF_VOTES}; label.csv "
      f"votes {FACE_VOTES} belong to row 10: paired with row 10's image, not the later row 11"]
  # fer0000002 (rows 3 and 5): label.csv's votes are row 5's, the kept row.
  assert any(n.startswith("fer0000002 occurs") and n.endswith("paired with row 5's image")
             for n in builder.report.notes)


def test_repeated_name_with_png_folders_is_reported(tmp_path):
  manual = add_repeated_name(write_ferplus(tmp_path / "manual", pixels_csv=False,
                                           png_folders=True), png_folders=True)
  builder = mock_data.build(Ferplus, tmp_path, manual)
  test = mock_data.read_split(builder, "test")
  assert int(mock_data.pixel(test[2]["image"])) == pixel_value(11)  # the only image there
  assert any(n.endswith("belong to row 10, but only row 11's image exists in the PNG "
                        "folders: paired with it, as the official code does")
             for n in builder.report.notes)


def test_ran_keys_left_out_by_the_protocol(tmp_path):
  manual = add_repeated_name(write_ferplus(tmp_path / "manual"))
  # fer2013new.csv's votes for fer0000008 are the later, non-face row's: no label.
  builder = mock_data.build(Ferplus, tmp_path, manual, config="fer2013new_majority")
  assert ids(mock_data.read_split(builder, "test")) == ["fer0000005", "fer0000006"]
  assert ids(mock_data.read_split(builder, "test_pose30")) == ["fer0000005"]
  assert builder.report.excluded["test_pose30"] == {
      "not in the parent test split: majority: NF": 1}
  assert ("pose_30_ferplus_list.txt: 1 line(s) left out, their image is not in the parent "
          "test split: fer0000008 (majority: NF)") in builder.report.notes
  # A key the parent never had still stops the build.
  mock_data.write_text(manual / "FERplus_dir/pose_30_ferplus_list.txt", ["0/fer0009999.jpg"])
  with pytest.raises(common.AnnotationError, match="1 key.* not in the parent test split: "
                     "fer0009999"):
    mock_data.build(Ferplus, tmp_path / "again", manual, config="fer2013new_majority")
