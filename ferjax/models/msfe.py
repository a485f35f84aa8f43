"""Multiscale feature extraction network with channel-wise self-attention (MSFE).

Reconstruction of Wen et al., "A discriminative multiscale feature extraction
network for facial expression recognition in the wild" (Meas. Sci. Technol.
2024), see docs/methods/msfe.md, 'Network': a ResNet backbone is tapped after several
stages (shallow geometric and deep semantic features); each tap goes through
channel-wise self-attention (CSA), a 1x1 compression to D channels, BN, ReLU
and global average pooling; the concatenated vectors are fused by
Linear + BatchNorm1d into the embedding f that the center cosine loss
(`ferjax.objectives.center_cosine`) acts on, and a linear classifier on f
gives the logits.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ferjax.models import resnet, stse, torch_layers
from ferjax.models.dtypes import compute_dtype

ATTENTION_VARIANTS = ("scaled", "danet", "se")


class ChannelSelfAttention(nnx.Module):
  """Channel-wise self-attention (CSA) over a feature map `[B, H, W, C]`.

  With X in R^{C x M} the map of one example (M = H*W):
    * `scaled`: E = X X^T / sqrt(M), A = softmax_row(E);
    * `danet`:  E = X X^T, A = softmax_row(rowmax(E) - E) (DANet's CAM);
  and the output is Z = gamma * (A X) + X with a scalar gamma initialised to 0,
  so the block starts as the identity.
  """

  def __init__(self, *, variant: str = "scaled"):
    if variant not in ("scaled", "danet"):
      raise ValueError(f"ChannelSelfAttention variant must be 'scaled' or 'danet', "
                       f"got {variant!r}")
    self.variant = variant
    self.gamma = nnx.Param(jnp.zeros((), jnp.float32))

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    b, h, w, c = x.shape
    # Channel-by-channel energies are sums over M positions: keep them in float32.
    flat = x.reshape(b, h * w, c).astype(jnp.float32)
    energy = jnp.einsum("bmc,bmd->bcd", flat, flat, precision=jax.lax.Precision.HIGHEST)
    if self.variant == "scaled":
      attention = jax.nn.softmax(energy / jnp.sqrt(float(h * w)), axis=-1)
    else:
      attention = jax.nn.softmax(jnp.max(energy, axis=-1, keepdims=True) - energy, axis=-1)
    attended = jnp.einsum("bcd,bmd->bmc", attention, flat).reshape(b, h, w, c)
    return x + (self.gamma[...] * attended).astype(x.dtype)


def tap_attention(variant: str, channels: int, *, reduction: int, dtype: Any,
                  rngs: nnx.Rngs) -> nnx.Module:
  """`msfe.attention`: CSA (`scaled`, `danet`) or a plain SE block (`se`, ratio r)."""
  if variant not in ATTENTION_VARIANTS:
    raise ValueError(f"model.msfe.attention must be one of {ATTENTION_VARIANTS}, "
                     f"got {variant!r}")
  if variant == "se":
    return stse.SqueezeExcitation(channels, reduction=reduction, dtype=dtype, rngs=rngs)
  return ChannelSelfAttention(variant=variant)


class TapBranch(nnx.Module):
  """One scale: CSA (or SE) -> 1x1 conv C -> D (no bias) -> BN -> ReLU -> GAP, `[B, D]`."""

  def __init__(self, channels: int, out_features: int, *, attention: str, reduction: int,
               dtype: Any, rngs: nnx.Rngs):
    self.attention = tap_attention(attention, channels, reduction=reduction, dtype=dtype,
                                   rngs=rngs)
    self.conv = resnet.conv(channels, out_features, 1, dtype=dtype, rngs=rngs)
    self.bn = resnet.batch_norm(out_features, dtype, rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.conv(self.attention(x, train=train))
    y = nnx.relu(self.bn(y, use_running_average=not train))
    return jnp.mean(y, axis=(1, 2))


class MultiscaleNetwork(nnx.Module):
  """ResNet taps -> per-tap CSA branches -> concat -> Linear + BN1d -> f -> logits.

  Input `[B, H, W, 3]`. Returns `{"logits": [B, K], "features": f [B, E]}`
  where f = BN1d(Linear(concat_i v_i)) is the embedding (E = `embed_dim`);
  no `logits` when `fc` is None (headless, e.g. inside AEA).
  `backbone` is a headless `ferjax.models.resnet.ResNet`, so converted
  ResNet checkpoints load into `model.backbone`.
  """

  def __init__(self, num_classes: int | None, *, depth: int = 18, taps: Sequence[int] = (2, 3, 4),
               attention: str = "scaled", reduction: int = 16, branch_dim: int = 256,
               embed_dim: int = 512, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    taps = tuple(taps)
    if not taps or len(set(taps)) != len(taps) or not set(taps) <= {1, 2, 3, 4}:
      raise ValueError(f"model.msfe.taps must be distinct stages among 1..4, got {taps}")
    self.taps = tuple(sorted(taps))
    self.backbone = resnet.ResNet(depth, None, dtype=dtype, rngs=rngs)
    expansion = self.backbone.num_features // resnet.STAGE_WIDTHS[-1]
    self.branches = nnx.List([
        TapBranch(resnet.STAGE_WIDTHS[t - 1] * expansion, branch_dim, attention=attention,
                  reduction=reduction, dtype=dtype, rngs=rngs) for t in self.taps])
    self.embed = torch_layers.linear(branch_dim * len(self.taps), embed_dim, dtype=dtype,
                                     rngs=rngs)
    self.embed_bn = resnet.batch_norm(embed_dim, dtype, rngs)
    self.num_features = embed_dim
    self.fc = None if num_classes is None else torch_layers.linear(
        embed_dim, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    stages = self.backbone.stages(x, train=train)
    pooled = [branch(stages[t - 1], train=train) for t, branch in zip(self.taps, self.branches)]
    features = self.embed_bn(self.embed(jnp.concatenate(pooled, axis=-1)),
                             use_running_average=not train)
    if self.fc is None:
      return {"features": features}
    return {"logits": self.fc(features), "features": features}


def from_config(model_config: ml_collections.ConfigDict, num_classes: int, *,
                headless: bool = False, rngs: nnx.Rngs) -> MultiscaleNetwork:
  """Builds the network from `config.model` (`depth`, `dtype`, `msfe.*`)."""
  msfe = model_config.msfe
  model = MultiscaleNetwork(num_classes, depth=model_config.depth, taps=tuple(msfe.taps),
                           attention=msfe.attention, reduction=msfe.reduction,
                           branch_dim=msfe.branch_dim, embed_dim=msfe.embed_dim,
                            dtype=compute_dtype(model_config.dtype), rngs=rngs)
  return resnet.drop_head(model) if headless else model
