"""Classification metrics: WAR, UAR, per-class accuracy, confusion matrix.

WAR (weighted average recall) is the overall accuracy; UAR (unweighted
average recall) is the mean of per-class recalls over classes present in the
evaluated set. Both are computed from the confusion matrix accumulated over
the whole evaluation split, with padded rows excluded.
"""

import io
import json

import matplotlib
import numpy as np
from etils import epath

from ferjax import paths

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                     mask: np.ndarray | None = None) -> np.ndarray:
  """counts[i, j] = number of valid examples with label i predicted as j."""
  labels = np.asarray(labels).reshape(-1)
  predictions = np.asarray(predictions).reshape(-1)
  if mask is not None:
    keep = np.asarray(mask).reshape(-1).astype(bool)
    labels, predictions = labels[keep], predictions[keep]
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predictions), 1)
  return counts


def war_uar(confusion: np.ndarray, class_names: tuple[str, ...]) -> dict:
  """WAR, UAR and per-class recall (by class name) from a confusion matrix."""
  support = confusion.sum(axis=1)
  total = support.sum()
  recall = np.divide(np.diag(confusion), support, out=np.zeros(len(support)),
                     where=support > 0)
  present = support > 0
  return {
      "war": float(np.trace(confusion) / total) if total else 0.0,
      "uar": float(recall[present].mean()) if present.any() else 0.0,
      "per_class": {name: float(r) for name, r, p in zip(class_names, recall, present) if p},
      "num_examples": int(total),
  }


def plot_confusion_matrix(confusion: np.ndarray, class_names: tuple[str, ...],
                          path: str, title: str = "") -> None:
  """Writes the row-normalised confusion matrix with counts as a PNG."""
  save_figure(confusion_figure(confusion, class_names, title), path, dpi=100)


def confusion_figure(confusion: np.ndarray, class_names: tuple[str, ...],
                     title: str = "") -> plt.Figure:
  """The row-normalised confusion matrix `[K, K]` (rows = true class) with counts."""
  rows = confusion.sum(axis=1, keepdims=True)
  normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
  size = 1.0 + 0.7 * len(class_names)
  fig, ax = plt.subplots(figsize=(size + 1.5, size))
  image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
  ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  for (i, j), count in np.ndenumerate(confusion):
    ax.text(j, i, f"{count}", ha="center", va="center",
            color="white" if normalised[i, j] > 0.5 else "black", fontsize=8)
  fig.colorbar(image, ax=ax, fraction=0.046)
  ax.set_title(title)
  fig.tight_layout()
  return fig


def save_figure(fig: plt.Figure, path: str, dpi: int) -> None:
  """Writes `fig` as a PNG to a local or cloud (`gs://`) path and closes it."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  plt.close(fig)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buffer.getvalue())


def write_json(path: str, payload: dict) -> None:
  """Writes JSON to a local or cloud path; a crash never leaves a half-written file.

  Locally through a temporary file and an atomic rename; object stores
  (`gs://`) publish an object only once it is completely written, so it is
  written in place there (a rename on them is a copy and a delete).
  """
  text = json.dumps(payload, indent=2, sort_keys=True)
  if paths.is_remote(path):
    epath.Path(path).write_text(text)
    return
  path = epath.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)
