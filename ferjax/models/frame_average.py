"""Frame-average video baseline: a 2D backbone per frame, features averaged over time.

logits = W (1/T sum_t f(x_t)) + b for clips `[B, T, H, W, 3]`, with f a
torchvision-layout ResNet (ResNet-18 by default) applied to every frame.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ferjax.models.dtypes import compute_dtype
from ferjax.models.resnet import ResNet, drop_head
from ferjax.models.torch_layers import linear


class FrameAverage(nnx.Module):
  """Per-frame ResNet, temporal mean of the pooled features, linear classifier."""

  def __init__(self, num_classes: int, *, depth: int = 18, dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    self.backbone = ResNet(depth, None, dtype=dtype, rngs=rngs)
    self.num_features = self.backbone.num_features
    self.fc = linear(self.backbone.num_features, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """Clips `[B, T, H, W, 3]` -> logits `[B, K]`, features `[B, D]` (time-averaged)."""
    if x.ndim != 5:
      raise ValueError(f"FrameAverage expects clips [B, T, H, W, 3], got {x.shape}")
    batch, frames = x.shape[:2]
    per_frame = self.backbone(x.reshape(batch * frames, *x.shape[2:]), train=train)["features"]
    features = jnp.mean(per_frame.reshape(batch, frames, -1), axis=1)
    if self.fc is None:
      return {"features": features}
    return {"logits": self.fc(features), "features": features}


def from_config(model_config: ml_collections.ConfigDict, num_classes: int, *,
                headless: bool = False, rngs: nnx.Rngs) -> FrameAverage:
  """FrameAverage from `config.model`: `depth` and `dtype`."""
  model = FrameAverage(num_classes, depth=model_config.depth,
                       dtype=compute_dtype(model_config.dtype), rngs=rngs)
  return drop_head(model) if headless else model
