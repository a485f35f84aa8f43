"""Builds the model named by `config.model.name`.

Each model module exposes `from_config(model_config, num_classes, *, headless, rngs)`;
`headless=True` drops the model's classifier (it then returns only `features`
and what else it computes). Modules are imported lazily so a config only pays
for what it uses.
"""

import importlib

import ml_collections
from flax import nnx

from ferjax.models import precision

MODEL_MODULES: dict[str, str] = {
    "resnet": "ferjax.models.resnet",
    "stse_resnet": "ferjax.models.stse",
    "msfe": "ferjax.models.msfe",
    "lstpnet": "ferjax.models.lstpnet",
    "frame_average": "ferjax.models.frame_average",
}


def build_model(model_config: ml_collections.ConfigDict, num_classes: int, *,
                rngs: nnx.Rngs) -> nnx.Module:
  """Instantiates `model_config.name` with `num_classes` outputs.

  With `model_config.aea.enabled`, the model is built headless and average
  expression anchoring with a fresh classifier goes on its features (SLM-AEA).
  Its layers take their parameter gradients in `model_config.grad_dtype`
  (`ferjax.models.precision`).
  """
  if model_config.name not in MODEL_MODULES:
    raise ValueError(f"config.model.name {model_config.name!r} is not one of "
                     f"{', '.join(sorted(MODEL_MODULES))}")
  module = importlib.import_module(MODEL_MODULES[model_config.name])
  with_aea = "aea" in model_config and model_config.aea.enabled
  # The config.json of a run from before `grad_dtype` lacks it; it changes only gradients,
  # so such a model, rebuilt to predict or convert, may take the default.
  with precision.gradient_dtype(model_config.get("grad_dtype", "float32")):
    model = module.from_config(model_config, num_classes, headless=with_aea, rngs=rngs)
    if with_aea:
      aea = importlib.import_module("ferjax.models.aea")
      model = aea.wrap_from_config(model, model_config, num_classes, rngs=rngs)
  return model
