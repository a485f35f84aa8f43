"""How a batch is fed to a model, shared by the train and eval steps."""

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx


def normalise(pixels: jax.Array, input_config: ml_collections.ConfigDict) -> jax.Array:
  """uint8 pixels -> (x / 255 - mean) / std in float32, on the device."""
  mean = jnp.asarray(input_config.mean, jnp.float32)
  std = jnp.asarray(input_config.std, jnp.float32)
  return (pixels.astype(jnp.float32) / 255.0 - mean) / std


def forward(model: nnx.Module, batch: dict, input_config, *, train: bool) -> dict:
  """Runs the model on the batch's `image` or `frames` (and `mask` for batch-aware models)."""
  pixels = batch["frames"] if "frames" in batch else batch["image"]
  kwargs = {"mask": batch["mask"]} if getattr(model, "takes_mask", False) else {}
  return model(normalise(pixels, input_config), train=train, **kwargs)
