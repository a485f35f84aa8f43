"""Builds the model named by `config.model.name`.

Each model module exposes `from_config(model_config, num_classes, *, rngs)`;
modules are imported lazily so a config only pays for what it uses.
"""

import importlib

import jax.numpy as jnp
import ml_collections
from flax import nnx

from ferjax.models import resnet

MODEL_MODULES: dict[str, str] = {
    "resnet": "ferjax.models.registry",
    "stse_resnet": "ferjax.models.stse",
    "msfe": "ferjax.models.msfe",
    "lstpnet": "ferjax.models.lstpnet",
    "frame_average": "ferjax.models.frame_average",
}


def compute_dtype(name: str):
  """'float32' | 'bfloat16' -> the jnp dtype, with a one-line error otherwise."""
  if name not in ("float32", "bfloat16"):
    raise ValueError(f"config.model.dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.dtype(name)


def from_config(model_config: ml_collections.ConfigDict, num_classes: int, *,
                rngs: nnx.Rngs) -> resnet.ResNet:
  """The plain torchvision-layout ResNet classifier (model name 'resnet')."""
  return resnet.ResNet(model_config.depth, num_classes,
                       dtype=compute_dtype(model_config.dtype), rngs=rngs)


def build_model(model_config: ml_collections.ConfigDict, num_classes: int, *,
                rngs: nnx.Rngs) -> nnx.Module:
  """Instantiates `model_config.name` with `num_classes` outputs.

  With `model_config.aea.enabled`, average expression anchoring and a fresh
  classifier are put on top of the model's pooled features (SLM-AEA).
  """
  if model_config.name not in MODEL_MODULES:
    raise ValueError(f"config.model.name {model_config.name!r} is not one of "
                     f"{', '.join(sorted(MODEL_MODULES))}")
  module = importlib.import_module(MODEL_MODULES[model_config.name])
  model = module.from_config(model_config, num_classes, rngs=rngs)
  if "aea" in model_config and model_config.aea.enabled:
    aea = importlib.import_module("ferjax.models.aea")
    model = aea.wrap_from_config(model, model_config, num_classes, rngs=rngs)
  return model
