"""Reading a PyTorch weights file (.pth / .pt) into NumPy arrays.

torch is imported only here and only when a file is read, so ferjax runs
without it; it is the `torch` extra (`pip install 'ferjax[torch]'`).
"""

from collections.abc import Mapping
import os
from typing import Any

import numpy as np

# Entries under which training scripts nest the weights (torch.save of a dict).
NESTED_KEYS = ("model_state_dict", "state_dict", "model")
# nn.DataParallel / DistributedDataParallel prefix every key with this.
PARALLEL_PREFIX = "module."


class _Skipped:
  """Inert stand-in for a non-tensor object pickled next to the weights.

  Training scripts save epochs, numpy scores, argparse namespaces or their
  own classes with the weights. weights_only loading refuses any such global;
  allow-listing this class under the global's name instead builds an empty
  object without running the file's code.
  """

  qualified_name = "?"

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state


def _stand_ins(path: str, torch: Any) -> list[tuple[type, str]]:
  """(stand-in class, global name) for every global weights_only would refuse."""
  try:
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
  except (ValueError, RuntimeError):  # Legacy (pre-zip) or damaged file: torch.load says why.
    return []
  return [(type("Skipped", (_Skipped,), {"qualified_name": name}), name) for name in names]


def first_line(error: Exception) -> str:
  """The first line of an exception's message, at most 200 characters."""
  lines = str(error).strip().splitlines()
  return lines[0][:200] if lines else type(error).__name__


def _state_dict(obj: Any, path: str, torch: Any) -> Mapping[str, Any]:
  """The tensor-valued mapping inside what torch.load returned."""
  if not isinstance(obj, Mapping):
    kind = obj.qualified_name if isinstance(obj, _Skipped) else type(obj).__name__
    raise ValueError(f"{path}: not a state dict but a pickled {kind} (save model.state_dict())")
  for key in NESTED_KEYS:
    if isinstance(obj.get(key), Mapping):
      return _state_dict(obj[key], f"{path}[{key!r}]", torch)
  others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
  if not obj or len(others) == len(obj):
    raise ValueError(f"{path}: not a state dict: a dict with keys {list(obj)[:6]} and no "
                     f"tensors or {'/'.join(NESTED_KEYS)} entry")
  if others:
    value = obj[others[0]]
    kind = value.qualified_name if isinstance(value, _Skipped) else type(value).__name__
    raise ValueError(f"{path}: state dict entry {others[0]!r} is a {kind}, not a tensor")
  return obj


def _to_numpy(tensor: Any, torch: Any) -> np.ndarray:
  tensor = tensor.detach().cpu()
  if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32,
                                                         torch.float64):
    tensor = tensor.float()  # bfloat16 & co. have no NumPy dtype.
  return tensor.numpy()


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The weights in a PyTorch file as `{key: array}`, in PyTorch layouts.

  Loads with `torch.load(map_location='cpu', weights_only=True)`, so no
  pickled code runs; other objects saved next to the weights (epoch, scores,
  argparse namespaces, custom classes) load as inert stand-ins and are
  ignored. Descends into a nested `model_state_dict` / `state_dict` /
  `model` entry and strips the `module.` prefix of (Distributed)DataParallel.

  Raises:
    FileNotFoundError: `path` is not a file.
    ImportError: torch is not installed.
    ValueError: the file is truncated or not a PyTorch file, or holds no state dict.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f"{path} is a PyTorch file and reading it needs torch "
                      "(pip install 'ferjax[torch]'), or convert it once with "
                      "`python -m ferjax.convert` where torch is installed") from None
  try:
    with torch.serialization.safe_globals(_stand_ins(path, torch)):
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path}: cannot read as PyTorch weights (truncated or not a torch.save "
                     f"file?): {type(e).__name__}: {first_line(e)}") from None
  arrays = {}
  for key, tensor in _state_dict(obj, path, torch).items():
    name = key.removeprefix(PARALLEL_PREFIX)
    if name in arrays:
      raise ValueError(f"{path}: key {name!r} appears with and without {PARALLEL_PREFIX!r}")
    arrays[name] = _to_numpy(tensor, torch)
  return arrays
