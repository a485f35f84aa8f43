"""An evaluator plug-in: top-k accuracy of the eval split from the model's `logits`."""

import json

import ml_collections
import numpy as np
from etils import epath


class TopK:
  needs = ("logits",)

  def __init__(self, k: int):
    self.k = k

  def __call__(self, context, predictions: dict[str, np.ndarray]) -> dict:
    top = np.argsort(-predictions["logits"], axis=-1, kind="stable")[:, :self.k]
    accuracy = float(np.mean(np.any(top == predictions["label"][:, None], axis=-1)))
    result = {"top_k": {"k": self.k, "accuracy": accuracy}}
    if context.final and context.is_writer:
      (epath.Path(context.workdir) / "top_k.json").write_text(json.dumps(result))
    return result


def from_config(settings: ml_collections.ConfigDict) -> TopK:
  return TopK(settings.k)
