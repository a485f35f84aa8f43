"""Embedding diagnostics: intra-/inter-class cosine similarity and a 2-D plot.

They measure what the center cosine loss is meant to do (compact classes,
separated classes) on the evaluation split's embeddings `features [N, D]`,
with `labels [N]` and only valid (unpadded) examples passed in.
"""

from collections.abc import Sequence

import matplotlib
import ml_collections
import numpy as np
from etils import epath

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from ferjax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

PROJECTIONS = ("pca", "tsne")


def _unit_rows(features: np.ndarray) -> np.ndarray:
  """Rows of `features` [N, D] divided by max(|row|, 1e-8), in float64."""
  features = np.asarray(features, np.float64)
  norms = np.linalg.norm(features, axis=-1, keepdims=True)
  return features / np.maximum(norms, 1e-8)


def embedding_report(features: np.ndarray, labels: np.ndarray,
                     class_names: Sequence[str]) -> dict[str, float]:
  """Mean pairwise cosine similarity within and between classes.

  With f̂_i the L2-normalised features, over ordered pairs i != j:
    intra_class_cos = mean_{y_i = y_j} <f̂_i, f̂_j>,
    inter_class_cos = mean_{y_i != y_j} <f̂_i, f̂_j>,
    intra_class_cos/<name> = the same restricted to class <name>.
  Pair sums use sum_{i != j in S} <f̂_i, f̂_j> = |sum_S f̂|^2 - sum_S |f̂_i|^2, so
  memory is O(N D). A mean with no pairs is NaN.

  Args:
    features: `[N, D]` embeddings of the valid evaluation examples.
    labels: `[N]` integer class ids in [0, len(class_names)).
    class_names: the class names, indexed by label.

  Returns:
    `intra_class_cos`, `inter_class_cos` and one `intra_class_cos/<name>` per
    class present in `labels`.
  """
  unit = _unit_rows(features)
  labels = np.asarray(labels).reshape(-1)
  if unit.ndim != 2 or unit.shape[0] != labels.shape[0]:
    raise ValueError(f"embedding_report: features {unit.shape} and labels {labels.shape} "
                     "must be [N, D] and [N]")
  if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
    raise ValueError(f"embedding_report: labels must lie in [0, {len(class_names)})")

  def pair_sum(rows: np.ndarray) -> float:
    total = rows.sum(axis=0)
    return float(total @ total - np.sum(rows * rows))

  report = {}
  intra_sum, intra_pairs = 0.0, 0
  for k, name in enumerate(class_names):
    rows = unit[labels == k]
    if not len(rows):
      continue
    pairs = len(rows) * (len(rows) - 1)
    class_sum = pair_sum(rows)
    report[f"intra_class_cos/{name}"] = class_sum / pairs if pairs else float("nan")
    intra_sum += class_sum
    intra_pairs += pairs
  all_pairs = len(unit) * (len(unit) - 1)
  inter_pairs = all_pairs - intra_pairs
  report["intra_class_cos"] = intra_sum / intra_pairs if intra_pairs else float("nan")
  report["inter_class_cos"] = ((pair_sum(unit) - intra_sum) / inter_pairs
                               if inter_pairs else float("nan"))
  return report


def project_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
  """`[N, 2]` coordinates of the L2-normalised features.

  `pca`: the centered rows projected on their top two right singular vectors;
  `tsne`: scikit-learn's t-SNE (scikit-learn is only a test extra).
  """
  if method not in PROJECTIONS:
    raise ValueError(f"embedding projection must be one of {PROJECTIONS}, got {method!r}")
  unit = _unit_rows(features)
  if method == "tsne":
    try:
      from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError("embedding projection 'tsne' needs scikit-learn installed") from e
    perplexity = min(30.0, max(len(unit) - 1, 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(unit)
  centered = unit - unit.mean(axis=0)
  _, _, vt = np.linalg.svd(centered, full_matrices=False)
  coords = centered @ vt[:2].T
  return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def plot_embeddings(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                    path: str, method: str = "pca", title: str = "") -> None:
  """Writes a PNG scatter of the 2-D projected embeddings, coloured by class."""
  coords = project_2d(features, method)
  labels = np.asarray(labels).reshape(-1)
  fig, ax = plt.subplots(figsize=(7, 6))
  colors = plt.get_cmap("tab10")
  for k, name in enumerate(class_names):
    points = coords[labels == k]
    if len(points):
      ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, color=colors(k % 10), label=name)
  ax.legend(markerscale=3, fontsize=8, loc="best")
  ax.set_xlabel(f"{method} 1")
  ax.set_ylabel(f"{method} 2")
  ax.set_title(title or f"embeddings ({method}, L2-normalised)")
  fig.tight_layout()
  metrics_lib.save_figure(fig, path, dpi=100)


class EmbeddingGeometry:
  """Within/between-class cosine of the eval split's `features` (`embedding`) and a 2-D plot.

  Reported at the last evaluation.
  """

  needs = ("features",)

  def __call__(self, context, predictions: dict[str, np.ndarray]) -> dict:
    if not context.final:
      return {}
    features, labels = predictions["features"], predictions["label"]
    report = embedding_report(features, labels, context.class_names)
    if context.is_writer:
      plot_embeddings(features, labels, context.class_names,
                      str(epath.Path(context.workdir) / "embeddings.png"))
    return {"embedding": report}


def from_config(settings: ml_collections.ConfigDict) -> EmbeddingGeometry:
  del settings  # No settings.
  return EmbeddingGeometry()
