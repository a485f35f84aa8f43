"""ferjax's own format for converted weights: an Orbax checkpoint directory.

`DIR/state` holds the arrays in ferjax layout as a nested dict of NumPy arrays
(the NNX path parts of each variable, relative to the converted module:
`layer1/0/conv1/kernel`), `DIR/meta` a JSON record of what was converted
(`format`, `family`, `arch`, `source`, `class_order`, `num_classes`). Reading
it needs neither torch nor the original file.
"""

from collections.abc import Mapping
from typing import Any

from etils import epath
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from ferjax.convert.state import Converted
from ferjax.convert.torch_file import first_line

FORMAT = "ferjax.convert/1"


def _absolute(directory: str) -> epath.Path:
  """`directory` as an absolute path (Orbax requires one); `gs://` paths already are."""
  path = epath.Path(directory)
  return path if path.is_absolute() else path.absolute()


def save(directory: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
  """Writes `arrays` (ferjax key -> array) and `meta` (JSON-able) to a new local or gs:// dir."""
  directory = _absolute(directory)
  if directory.exists():
    raise ValueError(f"{directory}: already exists; remove it or choose another destination")
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  checkpointer.save(directory, ocp.args.Composite(
      state=ocp.args.StandardSave(traverse_util.unflatten_dict(
          {key: np.asarray(array) for key, array in arrays.items()}, sep="/")),
      meta=ocp.args.JsonSave({"format": FORMAT, **meta})))


def restore(directory: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """(ferjax key -> array, meta) of a directory written by `save`.

  Raises:
    FileNotFoundError: `directory` does not exist.
    ValueError: it is not a converted ferjax checkpoint, or is damaged.
  """
  directory = _absolute(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"{directory}: no such directory")
  if not all((directory / part).is_dir() for part in ("state", "meta")):
    raise ValueError(f"{directory}: not a converted ferjax checkpoint (no state/ and meta/); "
                     "convert PyTorch files with `python -m ferjax.convert`")
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  try:
    restored = checkpointer.restore(directory, ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{directory}: cannot restore the converted checkpoint: "
                     f"{type(e).__name__}: {first_line(e)}") from None
  meta = dict(restored["meta"])
  if meta.get("format") != FORMAT:
    raise ValueError(f"{directory}: meta format {meta.get('format')!r} is not {FORMAT!r}")
  arrays = traverse_util.flatten_dict(restored["state"], sep="/")
  return {key: np.asarray(array) for key, array in arrays.items()}, meta


def read_converted(directory: str) -> Converted:
  """The arrays of a converted checkpoint as `Converted` (source keys = ferjax keys)."""
  arrays, meta = restore(directory)
  return Converted(family=meta["family"], arrays={key: (key, a) for key, a in arrays.items()})
