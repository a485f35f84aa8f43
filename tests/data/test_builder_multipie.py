"""Multi-PIE builder: native 6 classes from (session, recording), poses, subject folds."""

import pytest

from ferjax.data.builders import common, folds
from ferjax.data.builders.multipie import Multipie, camera_yaw

from . import mock_data

DATA = "Multi-Pie/data"


def write_image(root, subject, session, recording, camera, illumination):
  name = f"{subject}_{session:02d}_{recording}_{camera.replace('_', '')}_{illumination}.png"
  path = (root / DATA / f"session{session:02d}" / "multiview" / subject / recording / camera
          / name)
  return mock_data.write_image(path, name[:-4])


def write_multipie(root):
  for subject in ("001", "002"):
    write_image(root, subject, 1, "01", "05_1", "07")
    write_image(root, subject, 1, "02", "19_0", "00")
    write_image(root, subject, 2, "03", "08_0", "10")
    write_image(root, subject, 3, "03", "13_0", "02")
    write_image(root, subject, 4, "02", "05_1", "07")
    write_image(root, subject, 4, "03", "11_0", "07")   # yaw -90: only in pose13
  write_image(root, "003", 1, "01", "05_1", "07")       # not in all 4 sessions
  write_image(root, "001", 2, "01", "08_1", "01")       # elevated camera
  write_image(root, "002", 2, "02", "05_1", "03").rename(
      root / DATA / "session02/multiview/002/02/05_1/002_02_02_051.png")  # bad name
  (root / DATA / "session01/multiview/001/03/05_1").mkdir(parents=True)  # no such expression
  return root


def test_camera_yaw():
  assert [camera_yaw(c) for c in ("11_0", "08_0", "05_1", "19_0", "24_0")] == [-90, -45, 0,
                                                                              45, 90]


def test_pose7(tmp_path):
  builder = mock_data.build(Multipie, tmp_path, write_multipie(tmp_path / "manual"))
  assert builder.builder_config.name == "pose7"
  assert builder.info.features["label"].names == [
      "neutral", "smile", "surprise", "squint", "disgust", "scream"]
  records = mock_data.read_split(builder, folds.SPLIT)
  assert [mock_data.text(r["id"]) for r in records] == [
      "001_01_01_051_07", "001_01_02_190_00", "001_02_03_080_10", "001_03_03_130_02",
      "001_04_02_051_07", "002_01_01_051_07", "002_01_02_190_00", "002_02_03_080_10",
      "002_03_03_130_02", "002_04_02_051_07"]
  assert [int(r["label"]) for r in records[:5]] == [0, 1, 3, 4, 0]
  assert [int(r["canonical_label"]) for r in records[:5]] == [0, 1, -1, 5, 0]
  assert [int(r["yaw"]) for r in records[:5]] == [0, 45, -45, -30, 0]
  assert [int(r["illumination"]) for r in records[:3]] == [7, 0, 10]
  assert [mock_data.text(r["camera"]) for r in records[:2]] == ["05_1", "19_0"]
  assert [int(r["test_fold"]) for r in records] == [1] * 5 + [2] * 5
  assert [int(r["subject"]) for r in records] == [1] * 5 + [2] * 5
  for record in records:
    mock_data.assert_color(record["image"], mock_data.text(record["id"]))
  report = builder.report
  assert report.excluded[folds.SPLIT] == {"camera 08_1 not in pose7": 1,
                                          "camera 11_0 not in pose7": 2}
  assert any("1 subject(s) not recorded in all 4 sessions" in n for n in report.notes)
  reasons = [reason for _, _, reason in report.skipped]
  assert len(reasons) == 2
  assert any("no expression for session 1 recording 03" in r for r in reasons)
  assert any("file name does not match" in r for r in reasons)


def test_pose13_and_cropped_dir(tmp_path):
  cropped = write_multipie(tmp_path / "crops")
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual/README").write_text("originals elsewhere")
  builder = mock_data.build(Multipie, tmp_path, tmp_path / "manual", config="pose13",
                            cropped_dir=str(cropped))
  records = mock_data.read_split(builder, folds.SPLIT)
  assert len(records) == 12
  scream = [r for r in records if int(r["label"]) == 5]
  assert [int(r["yaw"]) for r in scream] == [-90, -90]


def test_wrong_layout(tmp_path):
  mock_data.write_image(tmp_path / "manual/Multi-Pie/session01/001_01_01_051_07.png")
  with pytest.raises(common.LayoutError, match="data/session01/multiview"):
    mock_data.build(Multipie, tmp_path, tmp_path / "manual")
