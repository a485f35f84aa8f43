"""BU-3DFE builder: user-rendered views listed in index.csv, P1/P2 views, subject folds."""

import pytest

from ferjax.data.builders import common, folds
from ferjax.data.builders.bu3dfe import Bu3dfe

from . import mock_data

HEADER = "path,subject,expression,intensity,yaw,pitch"


def write_bu3dfe(root):
  rows = []
  # 6 subjects -> sorted F0001, F0002, M0001, M0002, M0003, M0010 -> folds 1,2,3,4,5,1.
  for subject, expression, intensity, yaw, pitch in [
      ("M0002", "HA", 4, 0, 0), ("F0001", "AN", 1, 30, 0), ("F0002", "SU", 2, 90, 0),
      ("M0001", "di", 3, 45, 0), ("M0003", "SA", 4, -15, 15), ("M0010", "FE", 2, 60, 0),
      ("M0010", "NE", 0, 0, 0)]:
    path = f"render/{subject}_{expression}{intensity:02d}_y{yaw}_p{pitch}.png"
    mock_data.write_image(root / path, path)
    rows.append(f"{path},{subject},{expression},{intensity},{yaw},{pitch}")
  rows.append("render/missing.png,M0002,AN,1,0,0")
  rows.append("render/bad.png,M0002,XX,1,0,0")
  rows.append("render/bad2.png,M0002,AN,one,0,0")
  rows.append("render/short.png,M0002")
  mock_data.write_text(root / "index.csv", [HEADER] + rows)
  return root


def test_p1(tmp_path):
  builder = mock_data.build(Bu3dfe, tmp_path, write_bu3dfe(tmp_path / "manual"), config="p1")
  assert set(builder.info.splits) == {folds.SPLIT}
  records = mock_data.read_split(builder, folds.SPLIT)
  assert [mock_data.text(r["subject"]) for r in records] == [
      "M0002", "F0001", "F0002", "M0001", "M0010"]
  assert [int(r["label"]) for r in records] == [1, 6, 3, 5, 4]
  assert [mock_data.text(r["native_label"]) for r in records] == ["HA", "AN", "SU", "DI", "FE"]
  assert [int(r["test_fold"]) for r in records] == [4, 1, 2, 3, 1]
  assert [int(r["yaw"]) for r in records] == [0, 30, 90, 45, 60]
  assert [int(r["intensity"]) for r in records] == [4, 1, 2, 3, 2]
  for record in records:
    mock_data.assert_color(record["image"], mock_data.text(record["id"]) + ".png")
  report = builder.report
  assert report.excluded[folds.SPLIT] == {"neutral (NE) is not in the protocol": 1,
                                          "view (yaw, pitch) not in p1": 1}
  reasons = {item: reason for _, item, reason in report.skipped}
  assert "missing file" in reasons["render/missing"]
  assert "unknown expression" in reasons["index.csv:10"]
  assert "malformed" in reasons["index.csv:11"]
  assert "fewer fields than the header's 6" in reasons["index.csv:12"]


def test_p2_views(tmp_path):
  builder = mock_data.build(Bu3dfe, tmp_path, write_bu3dfe(tmp_path / "manual"), config="p2")
  records = mock_data.read_split(builder, folds.SPLIT)
  assert [(int(r["yaw"]), int(r["pitch"])) for r in records] == [(0, 0), (30, 0), (45, 0),
                                                                  (-15, 15)]
  assert [int(r["test_fold"]) for r in records] == [4, 1, 3, 5]


def test_bad_header(tmp_path):
  mock_data.write_text(tmp_path / "manual/index.csv", ["path,subject,expression", "a,b,c"])
  with pytest.raises(common.AnnotationError, match="intensity, pitch, yaw"):
    mock_data.build(Bu3dfe, tmp_path, tmp_path / "manual")
