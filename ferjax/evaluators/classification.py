"""Classification metrics of every evaluated split: WAR, UAR, per-class recall, confusion.

The eval split's metrics are the top level of the result (`war`, `uar`,
`per_class`, `num_examples`, `confusion_matrix` `[K, K]`, rows = true class);
extra splits (`config.dataset.extra_eval_splits`) go under `splits`. The last
evaluation also plots the eval split's confusion matrix to
workdir/confusion_matrix.png.
"""

import ml_collections
import numpy as np
from etils import epath

from ferjax import metrics as metrics_lib
from ferjax.evaluators.registry import EvalContext


def split_metrics(predictions: dict[str, np.ndarray], class_names: tuple[str, ...]) -> dict:
  """WAR/UAR/per-class recall and the confusion matrix of one split's predictions."""
  confusion = metrics_lib.confusion_matrix(predictions["label"], predictions["prediction"],
                                           len(class_names))
  result = metrics_lib.war_uar(confusion, class_names)
  result["confusion_matrix"] = confusion.tolist()
  return result


class Classification:
  """WAR/UAR of every evaluated split (module docstring)."""

  needs = ()

  def __call__(self, context: EvalContext, predictions: dict) -> dict:
    del predictions  # Every split is reported, not only the eval split.
    by_split = {name: split_metrics(split_predictions, context.class_names)
                for name, split_predictions in context.predictions.items()}
    result = by_split.pop(context.eval_split_name)
    if by_split:
      result["splits"] = by_split
    if context.final and context.is_writer:
      metrics_lib.plot_confusion_matrix(
          np.asarray(result["confusion_matrix"]), context.class_names,
          str(epath.Path(context.workdir) / "confusion_matrix.png"),
          title=f"{context.dataset_name} {context.eval_split_name}: WAR {result['war']:.3f} "
                f"UAR {result['uar']:.3f}")
    return result


def from_config(settings: ml_collections.ConfigDict) -> Classification:
  del settings  # No settings.
  return Classification()
