"""Weights of a ferjax training run as `Converted`: starting one run from another.

`init_from` may name a ferjax workdir (its latest checkpoint is read) or one of
its step directories, `WORKDIR/checkpoints/STEP`. The run's `config.json`
rebuilds the structure of its model; the weights of the model's one LSTPNet,
or else its one ResNet, are what loads. So a ResNet trained on face images
starts the backbone of a clip model (LSTPNet, frame average), as the paper's
MS-Celeb-1M ResNet-18 does, and a DFEW LSTPNet run starts an AFEW one.
"""

import json

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx, traverse_util

from ferjax import checkpointing
from ferjax.convert import torch_lstpnet, torch_resnet
from ferjax.convert.families import module_path
from ferjax.convert.state import Converted, path_key
from ferjax.models import registry

def find_run(path: str) -> tuple[epath.Path, epath.Path] | None:
  """(workdir, step directory) when `path` is a ferjax workdir or a step of one, else None.

  Raises:
    ValueError: `path` is a ferjax workdir without any saved checkpoint.
  """
  path = epath.Path(path)
  if (path / "config.json").exists():
    steps = checkpointing.saved_steps(str(path / "checkpoints"))
    if not steps:
      raise ValueError(f"{path}: a ferjax workdir without any saved checkpoint")
    return path, path / "checkpoints" / str(steps[-1])
  if path.name.isdigit() and path.parent.name == "checkpoints":
    workdir = path.parent.parent
    if (workdir / "config.json").exists():
      return workdir, path
  return None


def _weights_root(model: nnx.Module) -> tuple[str, tuple[str, ...]]:
  """(family, path of that family's module) inside `model`."""
  for family in (torch_lstpnet.FAMILY, torch_resnet.FAMILY):
    try:
      return family, tuple(str(part) for part in module_path(model, family))
    except ValueError:
      continue
  raise ValueError(f"model {type(model).__name__} holds no single LSTPNet or ResNet to load from")


def read_run(workdir: epath.Path, step_dir: epath.Path) -> Converted:
  """The LSTPNet or ResNet weights (parameters and BatchNorm statistics) saved in `step_dir`.

  `workdir` and `step_dir` are what `find_run` returns.

  Raises:
    ValueError: a model with neither module.
    errors.UserError: an unreadable checkpoint.
  """
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  model = nnx.eval_shape(lambda: registry.build_model(
      config.model, config.dataset.num_classes, rngs=nnx.Rngs(0)))
  family, root = _weights_root(model)
  state = checkpointing.restore_model_state(str(step_dir.parent), int(step_dir.name),
                                            nnx.state(model))
  flat = traverse_util.flatten_dict(jax.device_get(state.to_pure_dict()))
  variables = {tuple(str(part) for part in key): np.asarray(value) for key, value in flat.items()}
  arrays = {path_key(key[len(root):]): (f"{step_dir.name}:{path_key(key)}", value)
            for key, value in variables.items() if key[:len(root)] == root}
  return Converted(family, arrays)
