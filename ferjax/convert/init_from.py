"""`config.init_from`: starting a model from converted, PyTorch or ferjax-run weights.

A converted ResNet (torchvision ImageNet, MS-Celeb-1M) loads into the one
`ResNet` inside any ferjax model (the model itself, `model.backbone`, ...); a
converted LSTPNet into the one `LSTPNet`. A ferjax run's workdir gives the
weights of its own ResNet or LSTPNet the same way (`from_run`).
"""

from collections.abc import Mapping

from etils import epath
import numpy as np
from flax import nnx

from ferjax.convert import from_run, saved, torch_lstpnet, torch_resnet
from ferjax.convert.families import module_path
from ferjax.convert.state import Converted, LoadReport, load_converted
from ferjax.convert.torch_file import read_state_dict

# File names read as PyTorch weights (torch.save); any other file is refused.
PYTORCH_SUFFIXES = (".pth", ".pt", ".pth.tar")
ACCEPTED = ("init_from takes a ferjax workdir or one of its checkpoints/STEP directories, a "
            "directory written by `python -m ferjax.convert`, or a PyTorch weights file "
            f"({', '.join(PYTORCH_SUFFIXES)})")


def torch_family(state_dict: Mapping[str, np.ndarray]) -> str:
  """'lstpnet' for the official LSTPNet key layout, else 'resnet' (torchvision)."""
  if any(key.startswith(torch_lstpnet.KEY_PREFIXES) for key in state_dict):
    return torch_lstpnet.FAMILY
  return torch_resnet.FAMILY


def convert_torch(state_dict: Mapping[str, np.ndarray], *, source: str,
                  class_order: str | None) -> Converted:
  """Converts a PyTorch state dict of either family (see `torch_family`)."""
  if torch_family(state_dict) == torch_resnet.FAMILY:
    return torch_resnet.convert(state_dict)
  if class_order is None:
    raise ValueError(f"{source}: the class order of an LSTPNet checkpoint is not in the file; "
                     "convert it with `python -m ferjax.convert --arch=lstpnet "
                     "--class_order=dfew|canonical` (dfew for the DFEW checkpoint, canonical "
                     "for FERV39k/AFEW) and load the result")
  return torch_lstpnet.convert(state_dict, class_order=class_order)


def load_init(model: nnx.Module, path: str, *, partial: bool,
              class_order: str | None = None) -> LoadReport:
  """Loads pretrained weights into `model` in place and returns the report.

  `str(report)` is a table of the keys that did not load (see `LoadReport`).

  Args:
    model: a ferjax model holding concrete arrays (already sharded or not:
      loaded arrays take each variable's sharding and dtype).
    path: a ferjax workdir or checkpoint step directory (see `from_run`), a
      directory written by `python -m ferjax.convert`, or a PyTorch
      file (.pth/.pt: torchvision-layout ResNet or an official LSTPNet
      checkpoint), which needs torch.
    partial: False: every model variable must be filled from an array of its
      shape and every array used (e.g. evaluating an official LSTPNet
      checkpoint). True: load what matches, keep the rest at its initial
      values and report it (backbone-only init: a 1000-class ImageNet head
      next to a 7-class one is skipped).
    class_order: "dfew" | "canonical", only for an LSTPNet PyTorch file.

  Raises:
    FileNotFoundError: `path` does not exist.
    ImportError: `path` is a PyTorch file and torch is not installed.
    ValueError: unreadable file, not a state dict, no place for the weights
      in `model`, or (strict) any mismatch: a `state.LoadError` whose
      `report` lists them.
  """
  if not path:
    raise ValueError("init_from is empty: give a converted directory or a PyTorch file")
  run = from_run.find_run(path)
  if run is not None:
    converted = from_run.read_run(*run)
  elif epath.Path(path).is_dir():
    converted = saved.read_converted(path)
  elif epath.Path(path).exists() and not path.endswith(PYTORCH_SUFFIXES):
    raise ValueError(f"{path}: {ACCEPTED}")
  else:
    converted = convert_torch(read_state_dict(path), source=path, class_order=class_order)
  root = module_path(model, converted.family)
  return load_converted(model, converted, root=root, source=path, partial=partial)
