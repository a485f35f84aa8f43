"""Soft-thresholding squeeze-and-excitation (ST-SE) for ResNets.

Liu et al., "Soft thresholding squeeze-and-excitation network for
pose-invariant facial expression recognition", The Visual Computer 2023. No
official code exists; this is ferjax's reconstruction (docs/methods/stse.md),
built from DRSN-CW's residual shrinkage and SENet's excitation. For the
residual branch output U `[N, H, W, C]` (after the last BN, before the add):

  g   = GAP(|U|)                       `[N, C]`  (or |GAP(U)|: `gap_input`)
  s   = sigmoid(W2 ReLU(W1 g))         `[N, C]`  (W1: C -> C/r, W2: C/r -> C)
  tau = g * s                          `[N, C]`, 0 <= tau < g
  Y   = sign(U) max(|U| - tau, 0)      `[N, H, W, C]`

The block never rescales U (unless `rescale`): SE only sets the threshold.
`residual_attention(...)` returns the ResNet hook that places the block (or a
plain SE block, or DRSN-CW's shrinkage) in chosen stages of any ferjax ResNet.
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ferjax.models import precision
from ferjax.models.dtypes import compute_dtype
from ferjax.models.resnet import BlockHook, ResNet, batch_norm, drop_head

GAP_INPUTS = ("abs_then_mean", "mean_then_abs")
MODES = ("stse", "drsn_cw", "se")
# DRSN-CW's shrinkage (Zhao et al. 2020): GAP(|U|), FC(C -> C/4, bias) - BN -
# ReLU - FC(C/4 -> C, bias) - sigmoid, no rescaling.
DRSN_CW = dict(gap_input="abs_then_mean", reduction=4, excitation_bn=True,
               excitation_bias=True, rescale=False)


def soft_threshold(x: jax.Array, tau: jax.Array) -> jax.Array:
  """Soft thresholding Y = sign(x) max(|x| - tau, 0) = x - clip(x, -tau, tau).

  Written with comparisons rather than `sign` (whose JAX gradient is 0), so the
  gradients are the intended ones: dY/dx = 1[|x| > tau] and
  dY/dtau = -sign(x) 1[|x| > tau], both 0 on the dead zone |x| <= tau.

  Args:
    x: any shape.
    tau: non-negative thresholds broadcastable to `x` (e.g. `[N, 1, 1, C]`).
  """
  return jnp.where(x > tau, x - tau, jnp.where(x < -tau, x + tau, jnp.zeros_like(x)))


class Excitation(nnx.Module):
  """SE excitation s = sigmoid(W2 ReLU([BN](W1 g))): `[N, C]` -> `[N, C]` in (0, 1).

  W1: C -> max(C // reduction, 1), W2 back to C, Flax default Dense init;
  biases and a BN after W1 (DRSN) are optional.
  """

  def __init__(self, channels: int, reduction: int, *, use_bias: bool = False,
               use_bn: bool = False, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if reduction < 1:
      raise ValueError(f"stse.reduction must be >= 1, got {reduction}")
    hidden = max(channels // reduction, 1)
    self.fc1 = precision.Linear(channels, hidden, use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(hidden, dtype, rngs) if use_bn else None
    self.fc2 = precision.Linear(hidden, channels, use_bias=use_bias, dtype=dtype, rngs=rngs)

  def __call__(self, g: jax.Array, *, train: bool) -> jax.Array:
    h = self.fc1(g)
    if self.bn is not None:
      h = self.bn(h, use_running_average=not train)
    return nnx.sigmoid(self.fc2(nnx.relu(h)))


class SoftThresholdSE(nnx.Module):
  """ST-SE block: soft thresholding of U `[N, H, W, C]` by tau = g * s per (n, c).

  Attributes:
    gap_input: "abs_then_mean" (g = GAP(|U|), DRSN) or "mean_then_abs"
      (g = |GAP(U)|, the abstract's literal reading; never larger).
    rescale: if True, Y = soft(U * s, tau) (SE recalibration, then shrinkage).
    threshold_scale: multiplies tau; 1 in use, 0 turns the block into the
      identity (tests/test_stse.py checks it against the plain ResNet).
  """

  def __init__(self, channels: int, *, reduction: int = 16,
               gap_input: str = "abs_then_mean", excitation_bn: bool = False,
               excitation_bias: bool = False, rescale: bool = False,
               threshold_scale: float = 1.0, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if gap_input not in GAP_INPUTS:
      raise ValueError(f"stse.gap_input must be one of {GAP_INPUTS}, got {gap_input!r}")
    self.gap_input = gap_input
    self.rescale = rescale
    self.threshold_scale = threshold_scale
    self.excitation = Excitation(channels, reduction, use_bias=excitation_bias,
                                 use_bn=excitation_bn, dtype=dtype, rngs=rngs)

  def squeeze(self, u: jax.Array) -> jax.Array:
    """g `[N, C]`: GAP(|U|) or |GAP(U)| over H, W."""
    if self.gap_input == "abs_then_mean":
      return jnp.mean(jnp.abs(u), axis=(1, 2))
    return jnp.abs(jnp.mean(u, axis=(1, 2)))

  def thresholds(self, u: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    """Returns (tau, s), both `[N, C]`, with tau = threshold_scale * g * s."""
    g = self.squeeze(u)
    s = self.excitation(g, train=train)
    return self.threshold_scale * g * s, s

  def __call__(self, u: jax.Array, *, train: bool) -> jax.Array:
    tau, s = self.thresholds(u, train=train)
    if self.rescale:
      u = u * s[:, None, None, :]
    return soft_threshold(u, tau[:, None, None, :])


class SqueezeExcitation(nnx.Module):
  """Plain SE block (Hu et al.): U * s with s = excitation(GAP(U)), `[N, H, W, C]`."""

  def __init__(self, channels: int, *, reduction: int = 16, excitation_bn: bool = False,
               excitation_bias: bool = False, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.excitation = Excitation(channels, reduction, use_bias=excitation_bias,
                                 use_bn=excitation_bn, dtype=dtype, rngs=rngs)

  def __call__(self, u: jax.Array, *, train: bool) -> jax.Array:
    s = self.excitation(jnp.mean(u, axis=(1, 2)), train=train)
    return u * s[:, None, None, :]


def residual_attention(*, mode: str = "stse", stages: Sequence[int] = (1, 2, 3, 4),
                       reduction: int = 16, gap_input: str = "abs_then_mean",
                       excitation_bn: bool = False, excitation_bias: bool = False,
                       rescale: bool = False, threshold_scale: float = 1.0,
                       dtype: Any = jnp.float32) -> BlockHook:
  """The ResNet `residual_attention` hook placing the block in `stages`.

  Use as `ResNet(50, 7, residual_attention=residual_attention(), rngs=rngs)`;
  blocks of other stages stay plain. `mode` picks the block:
    * "stse": `SoftThresholdSE` with the given switches;
    * "drsn_cw": `SoftThresholdSE` with DRSN-CW's settings (`DRSN_CW`), which
      replace `gap_input`, `reduction`, `excitation_bn`, `excitation_bias` and
      `rescale`;
    * "se": `SqueezeExcitation` (uses `reduction`, `excitation_bn`,
      `excitation_bias`; an ablation baseline).
  """
  if mode not in MODES:
    raise ValueError(f"stse.mode must be one of {MODES}, got {mode!r}")
  stages = tuple(stages)
  if not stages or any(s not in (1, 2, 3, 4) for s in stages):
    raise ValueError(f"stse.stages must be a non-empty subset of (1, 2, 3, 4), got {stages}")
  settings = dict(gap_input=gap_input, reduction=reduction, excitation_bn=excitation_bn,
                  excitation_bias=excitation_bias, rescale=rescale)
  if mode == "drsn_cw":
    settings = dict(DRSN_CW)

  def hook(stage: int, block: int, channels: int, rngs: nnx.Rngs) -> nnx.Module | None:
    del block  # every block of a chosen stage gets one
    if stage not in stages:
      return None
    if mode == "se":
      return SqueezeExcitation(channels, reduction=reduction, excitation_bn=excitation_bn,
                               excitation_bias=excitation_bias, dtype=dtype, rngs=rngs)
    return SoftThresholdSE(channels, threshold_scale=threshold_scale, dtype=dtype,
                           rngs=rngs, **settings)

  return hook


def from_config(model_config: ml_collections.ConfigDict, num_classes: int, *,
                headless: bool = False, rngs: nnx.Rngs) -> ResNet:
  """`config.model.name == "stse_resnet"`: a ResNet-`depth` with ST-SE blocks.

  Reads `model_config.depth`, `model_config.dtype` and `model_config.stse.*`
  (`enabled`, `mode`, `stages`, `reduction`, `gap_input`, `excitation_bn`,
  `excitation_bias`, `rescale`); `enabled=False` gives the plain ResNet.
  """
  cfg = model_config.stse
  dtype = compute_dtype(model_config.dtype)
  hook = None
  if cfg.enabled:
    hook = residual_attention(mode=cfg.mode, stages=cfg.stages, reduction=cfg.reduction,
                              gap_input=cfg.gap_input, excitation_bn=cfg.excitation_bn,
                              excitation_bias=cfg.excitation_bias, rescale=cfg.rescale,
                              dtype=dtype)
  model = ResNet(model_config.depth, num_classes, residual_attention=hook, dtype=dtype,
                 rngs=rngs)
  return drop_head(model) if headless else model
