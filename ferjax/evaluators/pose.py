"""Pose-invariant evaluation: top-1 accuracy per head-yaw (and pitch) bucket.

Computed on host from the eval split's per-example predictions, labels and
pose metadata (degrees), as in the per-view reports of the ST-SE paper's
BU-3DFE / Multi-PIE protocols (docs/methods/stse.md, 'Pose protocols'). Buckets are
half-open [e_i, e_{i+1}) with the last one closed; edges that are all >= 0
bucket the absolute angle |yaw|. For datasets with discrete views, edges at
the midpoints between views give per-view accuracy.
"""

from collections.abc import Sequence

import matplotlib
import ml_collections
import numpy as np
from etils import epath

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from ferjax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def _number(x: float) -> str:
  """Shortest decimal form of an angle for bucket labels: 15.0 -> "15"."""
  return f"{x:g}"


def _flat(name: str, array: np.ndarray, size: int | None = None) -> np.ndarray:
  """`array` as a 1-D numpy array of length `size` (if given), else ValueError."""
  array = np.asarray(array)
  if array.ndim != 1 or (size is not None and array.shape[0] != size):
    expected = f"[{size}]" if size is not None else "1-D"
    raise ValueError(f"pose_report: {name} must have shape {expected}, got {array.shape}")
  return array


def bucket_accuracy(correct: np.ndarray, angle: np.ndarray,
                    edges: Sequence[float]) -> dict:
  """Accuracy of `correct` `[N]` (bool) grouped by `angle` `[N]` (degrees).

  Args:
    correct: whether each example was classified correctly.
    angle: the example's angle; NaN = unknown (excluded, counted in "unknown").
    edges: >= 2 strictly increasing bucket edges; all >= 0 bucket |angle|.

  Returns:
    {"absolute": bool, "edges": [...], "buckets": {label: {"accuracy": float or
    None when empty, "count": int, "center": float}}, "unknown": int,
    "outside": int (known angles beyond the edges)}, all JSON-able.
  """
  edges = [float(e) for e in edges]
  if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
    raise ValueError(f"pose bucket edges (config.evals.pose.buckets) must be >= 2 strictly "
                     f"increasing angles, got {tuple(edges)}")
  known = np.isfinite(angle)
  absolute = edges[0] >= 0
  values = np.abs(angle) if absolute else angle
  buckets = {}
  bucketed = 0
  for i, (low, high) in enumerate(zip(edges, edges[1:])):
    last = i == len(edges) - 2
    inside = known & (values >= low) & ((values <= high) if last else (values < high))
    label = f"[{_number(low)},{_number(high)}{']' if last else ')'}"
    buckets[label] = {**_summary(correct[inside]), "center": (low + high) / 2}
    bucketed += int(inside.sum())
  return {"absolute": absolute, "edges": edges, "buckets": buckets,
          "unknown": int((~known).sum()), "outside": int(known.sum()) - bucketed}


def _summary(correct: np.ndarray) -> dict:
  """{"accuracy": mean of `correct` (None if empty), "count": its size}."""
  count = int(correct.size)
  return {"accuracy": float(correct.mean()) if count else None, "count": count}


def pose_report(predictions: np.ndarray, labels: np.ndarray, yaw: np.ndarray,
                pitch: np.ndarray | None, bucket_edges: Sequence[float]) -> dict:
  """Top-1 accuracy overall, per yaw bucket and (where known) per pitch bucket.

  Args:
    predictions: `[N]` predicted class ids of the valid (unpadded) examples.
    labels: `[N]` true class ids.
    yaw: `[N]` head yaw in degrees (NaN = unknown).
    pitch: `[N]` head pitch in degrees, or None when the dataset has none.
    bucket_edges: yaw and pitch bucket edges in degrees (see
      `bucket_accuracy`), e.g. 15-degree buckets over [-90, 90] or
      (0, 15, 30, 45, 90) for |angle|.

  Returns:
    {"overall": {"accuracy", "count"}, "yaw": bucket_accuracy(...), and
    "pitch": bucket_accuracy(...) when any pitch is known}.
  """
  predictions = _flat("predictions", predictions)
  size = predictions.shape[0]
  correct = predictions == _flat("labels", labels, size)
  report = {
      "overall": _summary(correct),
      "yaw": bucket_accuracy(correct, _flat("yaw", yaw, size).astype(np.float64),
                             bucket_edges),
  }
  if pitch is not None:
    pitch = _flat("pitch", pitch, size).astype(np.float64)
    if np.isfinite(pitch).any():
      report["pitch"] = bucket_accuracy(correct, pitch, bucket_edges)
  return report


def plot_accuracy_vs_yaw(report: dict, path: str, title: str = "") -> None:
  """Writes accuracy against the yaw bucket centre (non-empty buckets) as a PNG.

  Each point is annotated with its number of examples; the dashed line is the
  overall accuracy.
  """
  section = report["yaw"]
  points = [(b["center"], b["accuracy"], b["count"])
            for b in section["buckets"].values() if b["count"]]
  fig, ax = plt.subplots(figsize=(7, 4))
  if points:
    centers, accuracies, counts = zip(*points)
    ax.plot(centers, accuracies, "o-")
    for x, y, n in zip(centers, accuracies, counts):
      ax.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(0, 6),
                  ha="center", fontsize=7)
  if report["overall"]["count"]:
    ax.axhline(report["overall"]["accuracy"], ls="--", color="gray", label="overall")
    ax.legend(loc="upper right")
  ax.set_xlabel("|yaw| (degrees)" if section["absolute"] else "yaw (degrees)")
  ax.set_ylabel("top-1 accuracy")
  ax.set_ylim(0.0, 1.05)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  metrics_lib.save_figure(fig, path, dpi=120)


class PoseBuckets:
  """Accuracy per yaw/pitch bucket of the eval split (`pose` in the result) and its plot.

  Reported at the last evaluation; needs the `yaw` metadata
  (`config.dataset.metadata`), `pitch` when present.
  """

  needs = ("yaw",)

  def __init__(self, buckets: Sequence[float]):
    self.buckets = tuple(buckets)
    bucket_accuracy(np.zeros(0, bool), np.zeros(0), self.buckets)  # Checks the edges now.

  def __call__(self, context, predictions: dict[str, np.ndarray]) -> dict:
    if not context.final:
      return {}
    report = pose_report(predictions["prediction"], predictions["label"], predictions["yaw"],
                         predictions.get("pitch"), self.buckets)
    if context.is_writer:
      plot_accuracy_vs_yaw(report, str(epath.Path(context.workdir) / "accuracy_vs_yaw.png"))
    return {"pose": report}


def from_config(settings: ml_collections.ConfigDict) -> PoseBuckets:
  """`config.evals.pose.buckets`: yaw bucket edges in degrees."""
  return PoseBuckets(settings.buckets)
