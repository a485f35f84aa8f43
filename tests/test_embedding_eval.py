"""Embedding diagnostics: hand-computed cosine figures and the written plot."""

import numpy as np
import pytest
from PIL import Image

from ferjax.evaluators import embedding


def test_report_on_hand_made_embeddings():
  # Class a: (1, 0), (2, 0), (0.6, 0.8) -> unit (1, 0), (1, 0), (0.6, 0.8).
  # Class b: (0, 3), (0, 1)             -> unit (0, 1), (0, 1).
  features = np.array([[1.0, 0.0], [2.0, 0.0], [0.6, 0.8], [0.0, 3.0], [0.0, 1.0]])
  labels = np.array([0, 0, 0, 1, 1])
  report = embedding.embedding_report(features, labels, ("a", "b", "c"))
  # Pairs within a: cos = 1, 0.6, 0.6 (each twice); within b: 1 (twice).
  np.testing.assert_allclose(report["intra_class_cos/a"], (1 + 0.6 + 0.6) / 3)
  np.testing.assert_allclose(report["intra_class_cos/b"], 1.0)
  np.testing.assert_allclose(report["intra_class_cos"], (2 * 2.2 + 2 * 1.0) / 8)
  # Between a and b: rows (1,0),(1,0) give 0 with both b rows, (0.6,0.8) gives 0.8.
  np.testing.assert_allclose(report["inter_class_cos"], (2 * 0.8 * 2) / 12)
  assert "intra_class_cos/c" not in report


def test_report_matches_brute_force_pairs():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(40, 6))
  labels = rng.integers(0, 4, 40)
  report = embedding.embedding_report(features, labels, ("w", "x", "y", "z"))
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  cos = unit @ unit.T
  same = labels[:, None] == labels[None, :]
  off = ~np.eye(40, dtype=bool)
  np.testing.assert_allclose(report["intra_class_cos"], cos[same & off].mean(), rtol=1e-10)
  np.testing.assert_allclose(report["inter_class_cos"], cos[~same].mean(), rtol=1e-10)


def test_report_rejects_bad_inputs():
  with pytest.raises(ValueError, match="labels must lie"):
    embedding.embedding_report(np.ones((2, 3)), np.array([0, 3]), ("a", "b"))
  with pytest.raises(ValueError, match="must be"):
    embedding.embedding_report(np.ones((2, 3)), np.array([0, 1, 1]), ("a", "b"))


def test_pca_projection_recovers_the_dominant_direction():
  # Unit vectors on a short arc around (1, 0, 0): the spread is along the arc.
  angles = np.linspace(-0.2, 0.2, 11)
  features = np.stack([np.cos(angles), np.sin(angles), np.zeros(11)], axis=1)
  coords = embedding.project_2d(features)
  assert coords.shape == (11, 2)
  np.testing.assert_allclose(coords.mean(axis=0), 0.0, atol=1e-12)
  assert coords[:, 0].std() > 10 * coords[:, 1].std()
  with pytest.raises(ValueError, match="projection"):
    embedding.project_2d(features, "umap")


def test_plot_embeddings_writes_a_png(tmp_path):
  rng = np.random.default_rng(1)
  features = rng.normal(size=(30, 8))
  labels = rng.integers(0, 3, 30)
  path = tmp_path / "embeddings.png"
  embedding.plot_embeddings(features, labels, ("neutral", "happy", "sad"), str(path))
  with Image.open(path) as image:
    assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
