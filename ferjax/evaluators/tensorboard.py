"""TensorBoard images of each evaluation: the confusion matrix and misclassified examples.

`config.evals.tensorboard = {"max_examples": 16}` writes, at every
evaluation, `eval/confusion_matrix` and `eval/misclassified` (a grid of the
first `max_examples` misclassified eval-split examples in split order, titled
with their true and predicted classes; a clip shows its middle frame) to the
TensorBoard logdir, the workdir. It adds no metrics. With
`config.tensorboard=False` the runner leaves it out (`writes_tensorboard`).
"""

import ml_collections
from clu import metric_writers

from ferjax import summaries
from ferjax.evaluators.registry import EvalContext


class TensorBoardImages:
  """Writes the eval split's confusion matrix and misclassified examples (module docstring)."""

  needs = ()
  writes_tensorboard = True

  def __init__(self, max_examples: int):
    self.max_examples = max_examples
    self._writer = None

  def __call__(self, context: EvalContext, predictions: dict) -> dict:
    if not context.is_writer:
      return {}
    if self._writer is None:
      # The train loop's writer is not handed to evaluators; TensorBoard merges the
      # event files of one logdir.
      self._writer = metric_writers.SummaryWriter(context.workdir)
    title = f"{context.dataset_name} {context.eval_split_name}, step {context.step}"
    self._writer.write_images(context.step, summaries.eval_images(
        context.eval_split, predictions, context.class_names, title, self.max_examples))
    self._writer.flush()
    return {}


def from_config(settings: ml_collections.ConfigDict) -> TensorBoardImages:
  return TensorBoardImages(max_examples=settings.get("max_examples", 16))
