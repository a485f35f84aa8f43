"""Benchmark configs: `--model` shortcuts and the overrides the benchmark applies.

A shortcut names a packaged config (`ferjax.configs`) (its
`:synthetic` variant, so that the data a config needs is generated locally);
`--config` takes any config file instead. Overrides set the shapes and
precision being measured.
"""

import importlib
import math

import ml_collections

# shortcut -> (module in ferjax/configs/, ARG for get_config)
MODELS: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet", "synthetic,depth=18"),
    "resnet34": ("resnet", "synthetic,depth=34"),
    "resnet50": ("resnet", "synthetic,depth=50"),
    "stse_resnet50": ("stse_resnet50", "synthetic"),
    "msfe": ("msfe", "synthetic"),
    "slm_aea": ("slm_aea", "synthetic"),
    "lstpnet": ("lstpnet", "synthetic"),
    "frame_average": ("lstpnet", "synthetic,baseline"),
}


def shortcut_config(model: str) -> tuple[ml_collections.ConfigDict, str]:
  """(config, 'configs/X.py:ARG') for a `--model` shortcut."""
  if model not in MODELS:
    raise ValueError(f"--model={model!r} is not one of {', '.join(MODELS)}; "
                     "or pass --config=NAME:ARG")
  module_name, arg = MODELS[model]
  module = importlib.import_module(f"ferjax.configs.{module_name}")
  return module.get_config(arg), f"configs/{module_name}.py:{arg}"


def apply_overrides(config: ml_collections.ConfigDict, *, batch_size: int | None = None,
                    image_size: int | None = None, num_frames: int | None = None,
                    dtype: str | None = None, dataset: str | None = None,
                    data_dir: str | None = None) -> ml_collections.ConfigDict:
  """A copy of `config` with the benchmark's shapes; None keeps the config's value.

  `image_size` also sets `resize_size`: the same ratio as the config when it
  crops (72/64 of configs/resnet.py -> 252 for 224), equal when it does not. `num_frames`
  sets the clip length (and `model.num_frames` for models that take it),
  with `num_segments` reduced to a divisor of it.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  if batch_size is not None:
    if batch_size < 1:
      raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    config.batch_size = config.eval_batch_size = batch_size
  if image_size is not None:
    if image_size < 16:
      raise ValueError(f"--image_size must be >= 16, got {image_size}")
    ratio = config.input.resize_size / config.input.image_size
    config.input.resize_size = round(image_size * ratio)
    config.input.image_size = image_size
  if num_frames is not None:
    if config.dataset.kind != "clip":
      raise ValueError(f"--num_frames is for clip models; {config.model.name} takes images")
    if num_frames < 1:
      raise ValueError(f"--num_frames must be >= 1, got {num_frames}")
    config.input.num_frames = num_frames
    config.input.num_segments = math.gcd(config.input.num_segments, num_frames)
    if "num_frames" in config.model:
      config.model.num_frames = num_frames
  if dtype is not None:
    if dtype not in ("float32", "bfloat16"):
      raise ValueError(f"--dtype must be float32 or bfloat16, got {dtype!r}")
    config.model.dtype = dtype
  if dataset:
    config.dataset.name = dataset
  if data_dir:
    config.dataset.data_dir = data_dir
  return config
