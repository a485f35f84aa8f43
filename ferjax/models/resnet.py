"""ResNet-18/34/50/101/152 in Flax NNX, laid out like torchvision's (and ResNet-10).

Same block order and attribute names as torchvision (`conv1`, `bn1`, `layer1`…
`layer4`, blocks with `conv1..3`, `bn1..3`, `downsample`), explicit
torchvision padding (Flax 'SAME' pads stride-2 convs asymmetrically) and
torchvision BatchNorm settings (epsilon 1e-5, momentum 0.1 == Flax 0.9), so
PyTorch checkpoints convert one to one (see ferjax.convert).

Two hooks let attention blocks plug into every residual block without copying
the network:
  * `residual_attention(stage, block, channels)`: applied to the residual
    branch after its last BatchNorm, before the shortcut add (SE, ST-SE).
  * `input_gate(stage, block, channels)`: applied to the block input; its
    output feeds the residual branch and the downsample shortcut, while an
    identity shortcut carries the raw input (LSTPNet's TCE).
A hook returns an `nnx.Module` called as `m(x, train=...)`, or None for "no
block here". Stages are numbered 1..4 and blocks 0.. within a stage.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ferjax.models import init, precision, small_map_conv
from ferjax.models.dtypes import compute_dtype

BlockHook = Callable[[int, int, int, nnx.Rngs], nnx.Module | None]

STAGE_SIZES: dict[int, tuple[int, int, int, int]] = {
    # One BasicBlock per stage: not in torchvision, for the clip smoke run
    # (ferjax/configs/lstpnet.py `_smoke`) where a step must cost little.
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_WIDTHS = (64, 128, 256, 512)


def batch_norm(features: int, dtype: Any, rngs: nnx.Rngs) -> precision.BatchNorm:
  """BatchNorm with torchvision's epsilon and momentum."""
  return precision.BatchNorm(features, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                             dtype=dtype, rngs=rngs)


def conv(in_features: int, out_features: int, kernel: int, stride: int = 1, *,
         use_bias: bool = False, dtype: Any, rngs: nnx.Rngs) -> precision.Conv:
  """A kxk conv with torchvision's symmetric padding k//2 (tiny maps: see small_map_conv)."""
  pad = kernel // 2
  bias_init = init.torch_default_bias_init(in_features * kernel * kernel)
  return precision.Conv(in_features, out_features, (kernel, kernel), strides=stride,
                        padding=((pad, pad), (pad, pad)), use_bias=use_bias,
                        kernel_init=init.resnet_conv_init, bias_init=bias_init,
                        conv_general_dilated=small_map_conv.conv_general_dilated,
                        dtype=dtype, rngs=rngs)


class Downsample(nnx.Module):
  """Projection shortcut: 1x1 conv (stride s) + BN (torchvision's `downsample`)."""

  def __init__(self, in_features: int, out_features: int, stride: int, *,
               use_bias: bool, dtype: Any, rngs: nnx.Rngs):
    self.conv = conv(in_features, out_features, 1, stride, use_bias=use_bias,
                     dtype=dtype, rngs=rngs)
    self.bn = batch_norm(out_features, dtype, rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return self.bn(self.conv(x), use_running_average=not train)


class ResidualBlock(nnx.Module):
  """Shared skeleton of BasicBlock and Bottleneck: hooks and shortcut."""

  expansion = 1

  def _init_hooks(self, stage: int, block: int, in_features: int, out_features: int,
                  stride: int, *, conv_bias: bool, input_gate: BlockHook | None,
                  residual_attention: BlockHook | None, dtype: Any, rngs: nnx.Rngs):
    self.input_gate = input_gate(stage, block, in_features, rngs) if input_gate else None
    self.attention = (residual_attention(stage, block, out_features, rngs)
                      if residual_attention else None)
    needs_projection = stride != 1 or in_features != out_features
    self.downsample = (Downsample(in_features, out_features, stride, use_bias=conv_bias,
                                  dtype=dtype, rngs=rngs) if needs_projection else None)

  def residual(self, x: jax.Array, *, train: bool) -> jax.Array:
    raise NotImplementedError

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    gated = self.input_gate(x, train=train) if self.input_gate is not None else x
    out = self.residual(gated, train=train)
    if self.attention is not None:
      out = self.attention(out, train=train)
    # LSTPNet: the projection shortcut sees the gated input, the identity the raw one.
    shortcut = self.downsample(gated, train=train) if self.downsample is not None else x
    return nnx.relu(out + shortcut)


class BasicBlock(ResidualBlock):
  """conv3x3-BN-ReLU-conv3x3-BN (+ hooks) + shortcut, ReLU (ResNet-18/34)."""

  expansion = 1

  def __init__(self, stage: int, block: int, in_features: int, width: int, stride: int,
               *, conv_bias: bool = False, input_gate: BlockHook | None = None,
               residual_attention: BlockHook | None = None, dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    out_features = width * self.expansion
    self.conv1 = conv(in_features, width, 3, stride, use_bias=conv_bias, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(width, dtype, rngs)
    self.conv2 = conv(width, width, 3, use_bias=conv_bias, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(width, dtype, rngs)
    self._init_hooks(stage, block, in_features, out_features, stride, conv_bias=conv_bias,
                     input_gate=input_gate, residual_attention=residual_attention,
                     dtype=dtype, rngs=rngs)

  def residual(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x), use_running_average=not train))
    return self.bn2(self.conv2(y), use_running_average=not train)


class Bottleneck(ResidualBlock):
  """1x1-3x3(stride, V1.5)-1x1 bottleneck with expansion 4 (ResNet-50+)."""

  expansion = 4

  def __init__(self, stage: int, block: int, in_features: int, width: int, stride: int,
               *, conv_bias: bool = False, input_gate: BlockHook | None = None,
               residual_attention: BlockHook | None = None, dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    out_features = width * self.expansion
    self.conv1 = conv(in_features, width, 1, use_bias=conv_bias, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(width, dtype, rngs)
    self.conv2 = conv(width, width, 3, stride, use_bias=conv_bias, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(width, dtype, rngs)
    self.conv3 = conv(width, out_features, 1, use_bias=conv_bias, dtype=dtype, rngs=rngs)
    self.bn3 = batch_norm(out_features, dtype, rngs)
    self._init_hooks(stage, block, in_features, out_features, stride, conv_bias=conv_bias,
                     input_gate=input_gate, residual_attention=residual_attention,
                     dtype=dtype, rngs=rngs)

  def residual(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x), use_running_average=not train))
    y = nnx.relu(self.bn2(self.conv2(y), use_running_average=not train))
    return self.bn3(self.conv3(y), use_running_average=not train)


class ResNet(nnx.Module):
  """torchvision-layout ResNet returning logits and the pooled features.

  Input `[B, H, W, 3]`; `stages()` returns the four stage outputs
  (`[B, H/4, W/4, 64e]` … `[B, H/32, W/32, 512e]`, e = block expansion),
  `__call__` returns `{"logits": [B, K], "features": [B, 512e]}` (no logits
  when `num_classes` is None: a headless backbone).
  """

  def __init__(self, depth: int, num_classes: int | None, *, conv_bias: bool = False,
               input_gate: BlockHook | None = None,
               residual_attention: BlockHook | None = None,
               dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if depth not in STAGE_SIZES:
      raise ValueError(f"model.depth must be one of {sorted(STAGE_SIZES)}, got {depth}")
    block_cls = BasicBlock if depth < 50 else Bottleneck
    self.dtype = dtype
    # torchvision's stem conv has no bias, even in LSTPNet's biased variant.
    self.conv1 = precision.Conv(3, 64, (7, 7), strides=2, padding=((3, 3), (3, 3)),
                                use_bias=False, kernel_init=init.resnet_conv_init, dtype=dtype,
                                rngs=rngs)
    self.bn1 = batch_norm(64, dtype, rngs)
    in_features = 64
    layers = []
    for stage, (num_blocks, width) in enumerate(zip(STAGE_SIZES[depth], STAGE_WIDTHS), 1):
      blocks = []
      for block in range(num_blocks):
        stride = 2 if stage > 1 and block == 0 else 1
        blocks.append(block_cls(stage, block, in_features, width, stride,
                                conv_bias=conv_bias, input_gate=input_gate,
                                residual_attention=residual_attention, dtype=dtype,
                                rngs=rngs))
        in_features = width * block_cls.expansion
      layers.append(nnx.List(blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = layers
    self.num_features = in_features
    self.fc = None if num_classes is None else precision.Linear(
        in_features, num_classes, dtype=dtype, kernel_init=init.torch_default_kernel_init,
        bias_init=init.torch_default_bias_init(in_features), rngs=rngs)

  def stem(self, x: jax.Array, *, train: bool) -> jax.Array:
    """conv7x7/2 - BN - ReLU - maxpool3x3/2: `[B, H, W, 3]` -> `[B, H/4, W/4, 64]`."""
    x = nnx.relu(self.bn1(self.conv1(x.astype(self.dtype)), use_running_average=not train))
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

  def stages(self, x: jax.Array, *, train: bool) -> list[jax.Array]:
    """The outputs of layer1..layer4 for input images `[B, H, W, 3]`."""
    x = self.stem(x, train=train)
    outputs = []
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      for block in layer:
        x = block(x, train=train)
      outputs.append(x)
    return outputs

  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    features = jnp.mean(self.stages(x, train=train)[-1], axis=(1, 2))
    outputs = {"features": features}
    if self.fc is not None:
      outputs["logits"] = self.fc(features)
    return outputs


def drop_head(model: nnx.Module) -> nnx.Module:
  """`model` without its classifier `fc`: it then returns `features` and no `logits`.

  Every `from_config(..., headless=True)` builds the head and then drops it, so
  a headless model draws the same random keys as a headed one and the modules
  built after it from the same `nnx.Rngs` (AEA's classifier, the objective's
  centers) start from the same values for a given seed.
  """
  model.fc = None
  return model


def from_config(model_config: ml_collections.ConfigDict, num_classes: int, *,
                headless: bool = False, rngs: nnx.Rngs) -> ResNet:
  """The plain torchvision-layout ResNet classifier (model name 'resnet')."""
  model = ResNet(model_config.depth, num_classes,
                 dtype=compute_dtype(model_config.dtype), rngs=rngs)
  return drop_head(model) if headless else model
