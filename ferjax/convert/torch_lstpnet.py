"""Official LSTPNet checkpoints -> ferjax `LSTPNet` (ferjax.models.lstpnet).

Key map (docs/methods/lstpnet.md, 'Parity'; tests/testdata/lstpnet_state_dict_keys.txt; after
the `module.` prefix is stripped; `l` is the LSTformer layer):

  s_former.ir_back.*                          -> backbone/*  (torchvision rules,
                                                 conv biases included)
  s_former.ir_back.layerK.i.eca.*             -> backbone/layerK/i/input_gate/*
  s_former.eca.*                              -> tce/*
    eca_conv_1.0 / action_p2_conv1 / eca_conv_2.0 -> channel_conv1 / temporal_conv
                                                 / channel_conv2
  t_former.spatial_transformer.TC, .norm      -> lstformer/temporal_conv, /norm (tied)
  ....layers.l.0, .layers.l.1                 -> dropped after checking they equal
                                                 TC, norm (the tied copies)
  ....layers.l.2.fn.norm                      -> lstformer/layers/l/attention_norm
  ....layers.l.2.fn.fn.to_qkv, to_out.0       -> .../attention/to_qkv, /to_out
  ....layers.l.3.fn.norm                      -> .../ffn_norm
  ....layers.l.3.fn.fn.linear1.0, linear1.2, TC, norm, linear2.0, linear2.1
                                              -> .../ffn/linear1, norm1, depthwise_conv,
                                                 norm2, linear2, norm_out
  fc                                          -> fc (rows permuted to canonical order)

Conv1d weights (O, I, k) become kernels (k, I, O) (transpose(2, 1, 0)); the
depthwise (4096, 1, 3) becomes (3, 1, 4096) for `feature_group_count=4096`.
`to_qkv`'s kernel is the transposed weight: ferjax's attention reads q, k, v
as column blocks with head-major columns, as PyTorch does. LayerNorm
weight/bias -> scale/bias.
"""

from collections.abc import Mapping
import re

import numpy as np

from ferjax.convert.state import Converted
from ferjax.convert.torch_resnet import DROPPED_LEAF, linear_kernel, resnet_array
from ferjax.data.builders.dfer_lists import DFEW_ORDER
from ferjax.data.labels import CLASS_NAMES_7

FAMILY = "lstpnet"
# The DFEW checkpoint's outputs follow DFEW_ORDER (docs/datasets.md, 'DFEW'), the others canonical order.
CLASS_ORDERS = ("dfew", "canonical")
KEY_PREFIXES = ("s_former.", "t_former.")

_BACKBONE = "s_former.ir_back."
_FINAL_TCE = "s_former.eca."
_TRANSFORMER = "t_former.spatial_transformer."
_TCE_MODULES = {"eca_conv_1.0": "channel_conv1", "action_p2_conv1": "temporal_conv",
                "eca_conv_2.0": "channel_conv2"}
_SHARED_MODULES = {"TC": ("temporal_conv", "conv1d"), "norm": ("norm", "norm")}
_TIED_COPIES = {"0": "TC", "1": "norm"}  # layers.l.0 is TC, layers.l.1 is norm.
_LAYER_MODULES = {
    "2.fn.norm": ("attention_norm", "norm"),
    "2.fn.fn.to_qkv": ("attention/to_qkv", "linear"),
    "2.fn.fn.to_out.0": ("attention/to_out", "linear"),
    "3.fn.norm": ("ffn_norm", "norm"),
    "3.fn.fn.linear1.0": ("ffn/linear1", "linear"),
    "3.fn.fn.linear1.2": ("ffn/norm1", "norm"),
    "3.fn.fn.TC": ("ffn/depthwise_conv", "conv1d"),
    "3.fn.fn.norm": ("ffn/norm2", "norm"),
    "3.fn.fn.linear2.0": ("ffn/linear2", "linear"),
    "3.fn.fn.linear2.1": ("ffn/norm_out", "norm"),
}
_LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)\.(weight|bias)")


def conv1d_kernel(key: str, weight: np.ndarray) -> np.ndarray:
  """PyTorch Conv1d weight (O, I/groups, k) -> Flax kernel (k, I/groups, O)."""
  if weight.ndim != 3:
    raise ValueError(f"{key}: a Conv1d weight is (O, I, k), got shape {weight.shape}")
  return weight.transpose(2, 1, 0)


def canonical_rows(class_order: str, num_rows: int) -> list[int]:
  """Row r of the canonical head = row `canonical_rows(order, K)[r]` of the checkpoint's."""
  if class_order == "canonical":
    return list(range(num_rows))
  if class_order != "dfew":
    raise ValueError(f"class_order must be one of {CLASS_ORDERS}, got {class_order!r}")
  if num_rows != len(DFEW_ORDER):
    raise ValueError(f"the DFEW class order has {len(DFEW_ORDER)} classes, the fc {num_rows}")
  return [DFEW_ORDER.index(name) for name in CLASS_NAMES_7]


def _leaf(kind: str, module: str, leaf: str, key: str,
          array: np.ndarray) -> tuple[str, np.ndarray] | None:
  """One parameter of a LayerNorm / Linear / Conv1d named `module` in ferjax."""
  if leaf == "bias":
    return f"{module}/bias", array
  if leaf != "weight":
    return None
  if kind == "norm":
    return f"{module}/scale", array
  kernel = linear_kernel if kind == "linear" else conv1d_kernel
  return f"{module}/kernel", kernel(key, array)


def _tce_array(key: str, rest: str, target: str,
               array: np.ndarray) -> tuple[str, np.ndarray] | None:
  module, _, leaf = rest.rpartition(".")
  if module not in _TCE_MODULES:
    return None
  return _leaf("conv1d", f"{target}/{_TCE_MODULES[module]}", leaf, key, array)


def _transformer_array(key: str, rest: str,
                       state_dict: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
  """LSTformer keys; a tied copy is checked against the kept one and gives ('', array)."""
  layer = _LAYER_KEY.fullmatch(rest)
  if layer and layer[2] in _TIED_COPIES:
    shared_key = f"{_TRANSFORMER}{_TIED_COPIES[layer[2]]}.{layer[3]}"
    if shared_key not in state_dict:
      raise ValueError(f"{key} is a tied copy of {shared_key}, which the checkpoint lacks")
    if not np.array_equal(state_dict[key], state_dict[shared_key]):
      raise ValueError(f"{key} should be a tied copy of {shared_key} but differs from it")
    return "", state_dict[key]
  if layer and layer[2] in _LAYER_MODULES:
    module, kind = _LAYER_MODULES[layer[2]]
    return _leaf(kind, f"lstformer/layers/{layer[1]}/{module}", layer[3], key,
                 state_dict[key])
  module, _, leaf = rest.rpartition(".")
  if module not in _SHARED_MODULES:
    return None
  name, kind = _SHARED_MODULES[module]
  return _leaf(kind, f"lstformer/{name}", leaf, key, state_dict[key])


def _array(key: str, state_dict: Mapping[str, np.ndarray],
           class_order: str) -> tuple[str, np.ndarray] | None:
  array = state_dict[key]
  if key.startswith(_BACKBONE):
    rest = key.removeprefix(_BACKBONE)
    if ".eca." in rest:
      block, tce_rest = rest.split(".eca.", 1)
      return _tce_array(key, tce_rest, "backbone/" + block.replace(".", "/") + "/input_gate",
                        array)
    entry = resnet_array(rest, array)
    return None if entry is None else ("backbone/" + entry[0], entry[1])
  if key.startswith(_FINAL_TCE):
    return _tce_array(key, key.removeprefix(_FINAL_TCE), "tce", array)
  if key.startswith(_TRANSFORMER):
    return _transformer_array(key, key.removeprefix(_TRANSFORMER), state_dict)
  if key in ("fc.weight", "fc.bias"):
    return _leaf("linear", "fc", key.removeprefix("fc."), key,
                 array[canonical_rows(class_order, array.shape[0])])
  return None


def convert(state_dict: Mapping[str, np.ndarray], *, class_order: str) -> Converted:
  """An official LSTPNet state dict (`module.` stripped) -> `Converted`.

  Args:
    state_dict: PyTorch key -> array.
    class_order: the order of the checkpoint's outputs: "dfew" for the DFEW
      checkpoint (its fc rows are permuted into canonical order), "canonical"
      for the FERV39k and AFEW checkpoints (LSTPNet's order for them is
      ferjax's canonical one).

  Raises:
    ValueError: a tied copy differs from its kept weight, a weight has the
      wrong rank, or a DFEW-order fc does not have 7 rows.
  """
  if class_order not in CLASS_ORDERS:
    raise ValueError(f"class_order must be one of {CLASS_ORDERS}, got {class_order!r}")
  converted = Converted(family=FAMILY, arrays={})
  for key in state_dict:
    if key.endswith("." + DROPPED_LEAF):
      converted.dropped.append(key)
    elif (entry := _array(key, state_dict, class_order)) is None:
      converted.unexpected[key] = state_dict[key].shape
    elif not entry[0]:
      converted.dropped.append(key)
    else:
      converted.arrays[entry[0]] = (key, entry[1])
  return converted
