"""Pose buckets: accuracy per yaw/pitch bucket on a hand-made example, the PNG."""

import json

import numpy as np
import pytest

from ferjax.evaluators import pose

NAN = float("nan")
# Eleven examples: yaw (degrees), pitch, and whether each one is classified correctly.
YAW = np.array([-80, -50, -10, 0, 10, 44.9, 45, 89, 90, NAN, 100])
PITCH = np.array([0, 0, -20, -20, 5, 5, 5, 30, 30, 0, NAN])
CORRECT = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1], bool)
LABELS = np.arange(11) % 7
PREDICTIONS = np.where(CORRECT, LABELS, (LABELS + 1) % 7)


def test_signed_yaw_buckets_hand_computed():
  report = pose.pose_report(PREDICTIONS, LABELS, YAW, None, (-90, -45, 0, 45, 90))
  assert report["overall"] == {"accuracy": 7 / 11, "count": 11}
  yaw = report["yaw"]
  assert not yaw["absolute"] and yaw["unknown"] == 1 and yaw["outside"] == 1
  assert list(yaw["buckets"]) == ["[-90,-45)", "[-45,0)", "[0,45)", "[45,90]"]
  # [-90,-45): -80 ok, -50 wrong; [-45,0): -10 ok; [0,45): 0 ok, 10 wrong, 44.9 ok;
  # [45,90] (closed): 45 wrong, 89 wrong, 90 ok.
  expected = {"[-90,-45)": (0.5, 2, -67.5), "[-45,0)": (1.0, 1, -22.5),
              "[0,45)": (2 / 3, 3, 22.5), "[45,90]": (1 / 3, 3, 67.5)}
  for label, (accuracy, count, center) in expected.items():
    bucket = yaw["buckets"][label]
    assert bucket["count"] == count and bucket["center"] == center
    assert bucket["accuracy"] == pytest.approx(accuracy)
  assert "pitch" not in report
  json.dumps(report, allow_nan=False)


def test_absolute_buckets_pitch_and_empty_bucket():
  report = pose.pose_report(PREDICTIONS, LABELS, YAW, PITCH, (0, 30, 60, 90))
  yaw = report["yaw"]
  assert yaw["absolute"] and yaw["outside"] == 1 and yaw["unknown"] == 1
  # |yaw| in [0,30): -10, 0, 10 -> 2/3; [30,60): -50, 44.9, 45 -> 1/3; [60,90]: -80, 89, 90 -> 2/3.
  assert [b["count"] for b in yaw["buckets"].values()] == [3, 3, 3]
  assert [b["accuracy"] for b in yaw["buckets"].values()] == pytest.approx([2 / 3, 1 / 3, 2 / 3])
  pitch = report["pitch"]
  # |pitch| in [0,30): 0, 0, -20, -20, 5, 5, 5, 0 -> 5/8; [30,60): 30, 30 -> 1/2;
  # [60,90]: empty; one pitch unknown.
  counts = [b["count"] for b in pitch["buckets"].values()]
  assert counts == [8, 2, 0] and pitch["unknown"] == 1
  assert pitch["buckets"]["[0,30)"]["accuracy"] == pytest.approx(5 / 8)
  assert pitch["buckets"]["[30,60)"]["accuracy"] == pytest.approx(1 / 2)
  assert pitch["buckets"]["[60,90]"]["accuracy"] is None
  json.dumps(report, allow_nan=False)


def test_unknown_pitch_is_left_out():
  report = pose.pose_report(PREDICTIONS, LABELS, YAW, np.full(11, NAN), (0, 90))
  assert "pitch" not in report


@pytest.mark.parametrize("edges", [(), (10,), (0, 30, 30), (30, 0)])
def test_bad_edges_raise(edges):
  with pytest.raises(ValueError, match="evals.pose.buckets"):
    pose.pose_report(PREDICTIONS, LABELS, YAW, None, edges)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="yaw must have shape"):
    pose.pose_report(PREDICTIONS, LABELS, YAW[:5], None, (0, 90))


def test_plot_writes_png(tmp_path):
  report = pose.pose_report(PREDICTIONS, LABELS, YAW, PITCH, (-90, -45, 0, 45, 90))
  path = tmp_path / "plots" / "accuracy_vs_yaw.png"
  pose.plot_accuracy_vs_yaw(report, str(path), title="hand-made")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
