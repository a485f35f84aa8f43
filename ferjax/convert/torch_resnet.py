"""torchvision ResNet state dicts -> ferjax `ResNet` (ferjax.models.resnet).

ferjax mirrors torchvision's module names (`conv1`, `bn1`, `layerK.i.convJ`,
`layerK.i.bnJ`, `fc`), except that the `downsample` Sequential's `0` / `1` are
named `downsample.conv` / `downsample.bn`. Per parameter:

  conv weight (O, I, kh, kw) -> kernel (kh, kw, I, O)    transpose(2, 3, 1, 0)
  conv bias                  -> bias                     (LSTPNet's biased convs)
  BN weight, bias            -> scale, bias              nnx.Param
  BN running_mean, _var      -> mean, var                nnx.BatchStat
  BN num_batches_tracked     -> dropped                  (no Flax counterpart)
  fc weight (K, D)           -> kernel (D, K)            transpose
  fc bias                    -> bias

This covers torchvision ImageNet ResNet-18/34/50/101/152 files and the
MS-Celeb-1M ResNet-18 (`resnet18_msceleb.pth`) used by FER papers. Keys of
other heads (e.g. a `feature.*` layer) are reported as unexpected.
"""

from collections.abc import Mapping
import re

import numpy as np

from ferjax.convert.state import Converted

FAMILY = "resnet"
BATCH_NORM_LEAVES = {"weight": "scale", "bias": "bias", "running_mean": "mean",
                     "running_var": "var"}
DROPPED_LEAF = "num_batches_tracked"
_KEY = re.compile(r"(conv1|bn1|fc|layer[1-4]\.\d+\.(?:conv\d|bn\d|downsample\.[01]))\.(\w+)")


def conv2d_kernel(key: str, weight: np.ndarray) -> np.ndarray:
  """PyTorch Conv2d weight (O, I, kh, kw) -> Flax kernel (kh, kw, I, O)."""
  if weight.ndim != 4:
    raise ValueError(f"{key}: a Conv2d weight is (O, I, kh, kw), got shape {weight.shape}")
  return weight.transpose(2, 3, 1, 0)


def linear_kernel(key: str, weight: np.ndarray) -> np.ndarray:
  """PyTorch Linear weight (out, in) -> Flax kernel (in, out)."""
  if weight.ndim != 2:
    raise ValueError(f"{key}: a Linear weight is (out, in), got shape {weight.shape}")
  return weight.T


def resnet_array(key: str, array: np.ndarray) -> tuple[str, np.ndarray] | None:
  """(ferjax key, array in ferjax layout) for one torchvision key, None if it has none.

  `num_batches_tracked` also gives None; callers tell it apart by its leaf name.
  """
  found = _KEY.fullmatch(key)
  if not found:
    return None
  module, leaf = found.groups()
  parts = module.split(".")
  if parts[-2:] == ["downsample", "0"]:
    parts[-1] = "conv"
  elif parts[-2:] == ["downsample", "1"]:
    parts[-1] = "bn"
  name = "/".join(parts)
  if parts[-1].startswith("conv"):
    if leaf == "weight":
      return f"{name}/kernel", conv2d_kernel(key, array)
    return (f"{name}/bias", array) if leaf == "bias" else None
  if parts[-1].startswith("bn"):
    return (f"{name}/{BATCH_NORM_LEAVES[leaf]}", array) if leaf in BATCH_NORM_LEAVES else None
  if leaf == "weight":
    return f"{name}/kernel", linear_kernel(key, array)
  return (f"{name}/bias", array) if leaf == "bias" else None


def convert(state_dict: Mapping[str, np.ndarray]) -> Converted:
  """A torchvision-layout ResNet state dict (prefix already stripped) -> `Converted`.

  Keys are relative to the `ResNet` module; the depth is whatever the file
  holds (a mismatch with the model shows up as missing/unexpected keys).
  """
  converted = Converted(family=FAMILY, arrays={})
  for key, array in state_dict.items():
    if key.endswith("." + DROPPED_LEAF):
      converted.dropped.append(key)
    elif (entry := resnet_array(key, array)) is None:
      converted.unexpected[key] = array.shape
    else:
      converted.arrays[entry[0]] = (key, entry[1])
  return converted
