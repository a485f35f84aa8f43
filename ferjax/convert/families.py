"""The module class each converted family's keys are relative to, and finding it in a model."""

from flax import nnx

from ferjax.convert import torch_lstpnet, torch_resnet
from ferjax.convert.state import Path
from ferjax.models.lstpnet import LSTPNet
from ferjax.models.resnet import ResNet

FAMILY_MODULES: dict[str, type[nnx.Module]] = {
    torch_resnet.FAMILY: ResNet, torch_lstpnet.FAMILY: LSTPNet}


def module_path(model: nnx.Module, family: str) -> Path:
  """The path of the one module of `family`'s class inside `model` (() for model itself)."""
  cls = FAMILY_MODULES[family]
  found = [path for path, module in nnx.iter_modules(model) if isinstance(module, cls)]
  if len(found) != 1:
    where = "none" if not found else ", ".join("/".join(map(str, p)) or "." for p in found)
    raise ValueError(f"{family} weights load into exactly one {cls.__name__} module; "
                     f"{type(model).__name__} has {len(found)} ({where})")
  return found[0]
