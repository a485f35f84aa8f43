"""WAR/UAR, per-class accuracy and the confusion matrix on hand-computed cases."""

import numpy as np
import pytest

from ferjax import metrics


def test_confusion_matrix_skips_masked_rows():
  labels = np.array([0, 0, 1, 2, 2, 2])
  predictions = np.array([0, 1, 1, 2, 0, 1])
  mask = np.array([True, True, True, True, True, False])
  expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, predictions, 3, mask), expected)


def test_war_uar_by_hand():
  confusion = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
  result = metrics.war_uar(confusion, ("neutral", "happy", "sad"))
  assert result["war"] == pytest.approx(3 / 5)
  assert result["uar"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
  assert result["per_class"] == pytest.approx({"neutral": 0.5, "happy": 1.0, "sad": 0.5})
  assert result["num_examples"] == 5


def test_uar_ignores_absent_classes():
  confusion = np.array([[2, 0, 0], [0, 0, 0], [1, 0, 1]])
  result = metrics.war_uar(confusion, ("neutral", "happy", "sad"))
  assert result["uar"] == pytest.approx((1.0 + 0.5) / 2)
  assert "happy" not in result["per_class"]


def test_confusion_png_and_json(tmp_path):
  metrics.plot_confusion_matrix(np.eye(3, dtype=int) * 4, ("a", "b", "c"), str(tmp_path / "c.png"))
  assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
  metrics.write_json(str(tmp_path / "m.json"), {"war": 1.0})
  assert (tmp_path / "m.json").read_text().strip().startswith("{")
