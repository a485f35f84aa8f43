"""configs/resnet.py:synthetic trained with the EMA-target objective, evaluated with top-k."""

import ml_collections

from configs import resnet


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = resnet.get_config(arg or "synthetic")
  config.objective = ml_collections.ConfigDict(
      {"name": "ema_targets", "momentum": 0.5, "weight": 0.3})
  config.evals.top_k = {"k": 2}
  return config
