"""LSTPNet (Lu et al., PRCV 2023 / IVC 2024) as in its official code.

frames `[B, T, H, W, 3]` -> ResNet-18 over the B*T frames, with conv biases and
a TCE on the input of every block of layer2..layer4 (the downsample shortcut
sees the gated input, an identity shortcut the raw one) -> a final TCE on the
layer4 output -> GAP -> tokens `[B, T, 512]` -> LSTformer -> mean over T ->
Linear(512, K). See docs/methods/lstpnet.md; BatchNorm statistics are
taken over all B*T frames, as in the reference.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ferjax.models.lstformer import LSTformer
from ferjax.models.dtypes import compute_dtype
from ferjax.models.resnet import ResNet, drop_head
from ferjax.models.tce import TemporalChannelExcitation
from ferjax.models.torch_layers import linear


class LSTPNet(nnx.Module):
  """Long short-term perception network for clips of `num_frames` frames."""

  def __init__(self, num_classes: int, num_frames: int = 16, *, depth: int = 18,
               transformer_depth: int = 2, heads: int = 8, dim_head: int = 64,
               mlp_dim: int = 4096, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.num_frames = num_frames

    def tce_gate(stage: int, block: int, channels: int,
                 rngs: nnx.Rngs) -> TemporalChannelExcitation | None:
      del block
      if stage == 1:  # layer1 keeps torchvision's plain BasicBlocks.
        return None
      return TemporalChannelExcitation(channels, num_frames, dtype=dtype, rngs=rngs)

    self.backbone = ResNet(depth, None, conv_bias=True, input_gate=tce_gate, dtype=dtype,
                           rngs=rngs)
    dim = self.num_features = self.backbone.num_features
    self.tce = TemporalChannelExcitation(dim, num_frames, dtype=dtype, rngs=rngs)
    self.lstformer = LSTformer(dim, transformer_depth, heads, dim_head, mlp_dim, dtype=dtype,
                               rngs=rngs)
    self.fc = linear(dim, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """Clips `[B, T, H, W, 3]` -> logits `[B, K]`, features `[B, D]`, attention `[B, 8, T, T]`."""
    if x.ndim != 5 or x.shape[1] != self.num_frames:
      raise ValueError(f"LSTPNet expects clips [B, {self.num_frames}, H, W, 3], got {x.shape} "
                       "(model.num_frames must equal input.num_frames)")
    batch, frames = x.shape[:2]
    maps = self.backbone.stages(x.reshape(batch * frames, *x.shape[2:]), train=train)[-1]
    maps = self.tce(maps, train=train)
    tokens = jnp.mean(maps, axis=(1, 2)).reshape(batch, frames, -1)
    tokens, attention = self.lstformer(tokens)
    features = jnp.mean(tokens, axis=1)
    outputs = {"features": features, "attention": attention}
    if self.fc is not None:
      outputs["logits"] = self.fc(features)
    return outputs


def from_config(model_config: ml_collections.ConfigDict, num_classes: int, *,
                headless: bool = False, rngs: nnx.Rngs) -> LSTPNet:
  """LSTPNet from `config.model`: `num_frames`, `depth`, `dtype` and `lstpnet.*`."""
  cfg = model_config.lstpnet
  model = LSTPNet(num_classes, model_config.num_frames, depth=model_config.depth,
                  transformer_depth=cfg.transformer_depth, heads=cfg.heads,
                  dim_head=cfg.dim_head, mlp_dim=cfg.mlp_dim,
                  dtype=compute_dtype(model_config.dtype), rngs=rngs)
  return drop_head(model) if headless else model
