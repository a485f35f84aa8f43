"""TensorBoard content beyond the train/eval scalars: hparams, per-class recall, images.

- `flat_hparams(config)`: the config as `a.b.c -> value` for the HParams tab.
- `eval_scalars(metrics)`: the float eval metrics plus `recall/<class>`.
- `eval_images`: `[1, H, W, 3]` uint8 renderings of the
  confusion matrix and of a grid of misclassified examples titled with their
  true and predicted classes.
"""

from typing import Any

import ml_collections
import numpy as np
from flax import traverse_util
from matplotlib import pyplot as plt
from matplotlib.backends import backend_agg

from ferjax import metrics as metrics_lib
from ferjax.data import augment


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, bool | int | float | str]:
  """Every config field as `a.b.c -> value`; tuples and None become their repr.

  TensorBoard's hparams plugin takes only bool, int, float and str values.
  """
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  return {k: v if isinstance(v, (bool, int, float, str)) else repr(v)
          for k, v in sorted(flat.items())}


def eval_scalars(metrics: dict[str, Any]) -> dict[str, float]:
  """The float metrics of an eval result and each class's recall as `recall/<class>`."""
  scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
  scalars.update({f"recall/{name}": value
                  for name, value in metrics.get("per_class", {}).items()})
  return scalars


def figure_to_array(fig: plt.Figure) -> np.ndarray:
  """Renders and closes a matplotlib figure: `[H, W, 3]` uint8."""
  plt.close(fig)
  canvas = backend_agg.FigureCanvasAgg(fig)  # Pixels whatever the interactive backend.
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_image(confusion: np.ndarray, class_names: tuple[str, ...],
                    title: str = "") -> np.ndarray:
  """`[H, W, 3]` uint8 image of the confusion matrix `[K, K]` (metrics.confusion_figure)."""
  return figure_to_array(metrics_lib.confusion_figure(confusion, class_names, title))


def example_image(record: dict) -> np.ndarray:
  """The stored picture of a record, `[H, W, 3]` uint8: the image, or a clip's middle frame."""
  if "frames" in record:
    frames = record["frames"]
    encoded = frames[len(frames) // 2]
  else:
    encoded = record["image"]
  return np.asarray(augment.decode(encoded))


def misclassified_indices(labels: np.ndarray, predictions: np.ndarray,
                          max_examples: int) -> np.ndarray:
  """Indices of the first `max_examples` examples (in split order) with a wrong prediction."""
  return np.flatnonzero(np.asarray(labels) != np.asarray(predictions))[:max_examples]


def misclassified_image(images: list[np.ndarray], labels, predictions,
                        class_names: tuple[str, ...], columns: int = 4) -> np.ndarray:
  """A grid of `images` (each `[H, W, 3]`) titled `true / predicted`: `[H', W', 3]` uint8."""
  rows = max(1, -(-len(images) // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.2 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for ax, image, label, prediction in zip(axes.flat, images, labels, predictions):
    ax.imshow(image)
    ax.set_title(f"true {class_names[label]}\npred {class_names[prediction]}", fontsize=8)
  if not images:
    axes[0, 0].text(0.5, 0.5, "no misclassified examples", ha="center", va="center")
  fig.tight_layout()
  return figure_to_array(fig)


def eval_images(split, predictions: dict[str, np.ndarray], class_names: tuple[str, ...],
                title: str, max_examples: int = 16) -> dict[str, np.ndarray]:
  """`eval/confusion_matrix` and `eval/misclassified` images, each `[1, H, W, 3]` uint8.

  `predictions` holds `label` and `prediction` `[N]` in the order of `split`
  (a `pipeline.SplitSource`), whose records give the misclassified pictures.
  """
  labels, predicted = np.asarray(predictions["label"]), np.asarray(predictions["prediction"])
  confusion = metrics_lib.confusion_matrix(labels, predicted, len(class_names))
  wrong = misclassified_indices(labels, predicted, max_examples)
  pictures = [example_image(split.record(int(j))[1]) for j in wrong]
  return {"eval/confusion_matrix": confusion_image(confusion, class_names, title)[None],
          "eval/misclassified": misclassified_image(pictures, labels[wrong], predicted[wrong],
                                                    class_names)[None]}
