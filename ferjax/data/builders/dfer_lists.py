"""Clip-list files of Former-DFER and LSTPNet, and the video builders' configs.

A list file has one clip per line, `<frame_dir> <num_frames> <label>`, single
spaces, no header, CRLF (LSTPNet) or LF (Former-DFER); docs/datasets.md,
'DFEW', 'FERV39k' and 'AFEW 7.0'. The builders resolve `<frame_dir>` (an absolute path on the
authors' machines) by its trailing components inside the user's manual download
and keep the first `num_frames` frames in lexicographic order, which reproduces
the repositories' clip sets and frame counts exactly.
"""

import dataclasses
import pathlib
import re
from typing import Sequence

import tensorflow_datasets as tfds

from ferjax.data import labels
from ferjax.data.builders import common

# Label orders of the list files (index -> class name).
DFEW_ORDER = ("happy", "sad", "neutral", "anger", "surprise", "disgust", "fear")
CANONICAL_ORDER = labels.CLASS_NAMES_7
LIST_ORDERS = ("lstpnet", "former_dfer")


@dataclasses.dataclass(eq=False)
class ClipConfig(tfds.core.BuilderConfig):
  """Where the clip set comes from.

  Attributes:
    list_order: None reads the dataset's own split files/folders; 'lstpnet' or
      'former_dfer' reads that repository's list files (builder argument
      `list_files`), whose label order it fixes.
  """
  list_order: str | None = None


def clip_configs(dataset: str) -> list[ClipConfig]:
  """The configs of a video builder: official, lstpnet, former_dfer."""
  return [
      ClipConfig(name="official", description=f"{dataset}'s own split files"),
      ClipConfig(name="lstpnet", list_order="lstpnet",
                 description="LSTPNet's list files (list_files=...)"),
      ClipConfig(name="former_dfer", list_order="former_dfer",
                 description="Former-DFER's list files (list_files=...)"),
  ]


@dataclasses.dataclass(frozen=True)
class ListClip:
  """One list-file line.

  Attributes:
    where: 'file:line' for the build report.
    parts: the components of the frame folder path ('/' or '\\' separated).
    num_frames: the frame count the list gives.
    label: the list's label index (in the file's label order).
  """
  where: str
  parts: tuple[str, ...]
  num_frames: int
  label: int


def list_file_paths(list_files: str | Sequence[str] | None, config: ClipConfig,
                    dataset: str) -> list[pathlib.Path]:
  """The list files of a list-order config (comma-separated string or sequence).

  Raises:
    LayoutError: when none are given or one does not exist.
  """
  if isinstance(list_files, str):
    list_files = [f for f in list_files.split(",") if f]
  if not list_files:
    raise common.LayoutError(
        f"{dataset}/{config.name} reads the {config.list_order} list files: pass "
        "list_files=... (prepare: --list_file=PATH[,PATH...]); see docs/datasets.md")
  paths = [common.require(pathlib.Path(f).expanduser(), "list file") for f in list_files]
  for path in paths:
    if not path.is_file():
      raise common.LayoutError(f"list file {path} is not a file")
  return paths


def split_of(path: pathlib.Path) -> str:
  """'train' or 'test' from a list file name ending in _train, _test or _validation.

  Raises:
    AnnotationError: for any other name.
  """
  token = path.stem.rsplit("_", 1)[-1].lower()
  if token == "train":
    return "train"
  if token in ("test", "validation"):
    return "test"
  raise common.AnnotationError(f"cannot tell the split of list file {path}: its name must "
                               "end in _train, _test or _validation (as published)")


def dfew_fold_of(path: pathlib.Path) -> tuple[int, str]:
  """(fold, 'train'|'test') of a DFEW_set_<k>_<split>.txt list file."""
  match = re.search(r"set_([1-5])_(train|test)$", path.stem)
  if match is None:
    raise common.AnnotationError(f"cannot tell the fold of DFEW list file {path}: expected "
                                 "DFEW_set_<1..5>_<train|test>.txt")
  return int(match[1]), match[2]


def read_list(report: common.BuildReport, split: str, path: pathlib.Path,
              num_classes: int = 7) -> list[ListClip]:
  """The well-formed lines of a list file; malformed ones go to the report.

  Raises:
    AnnotationError: when the file has no line at all (an empty download would
      otherwise silently drop a split or a fold).
  """
  clips = []
  lines = common.read_lines(path)
  if not lines:
    raise common.AnnotationError(f"list file {path} is empty")
  for n, line in lines:
    where = f"{path.name}:{n}"
    fields = line.split()
    try:
      if len(fields) != 3:
        raise ValueError(f"{len(fields)} fields instead of 3")
      num_frames, label = int(fields[1]), int(fields[2])
      if num_frames < 1 or not 0 <= label < num_classes:
        raise ValueError(f"frame count {num_frames} or label {label} out of range")
    except ValueError as e:
      report.skip(split, where, f"malformed line ({e}): {line!r}")
      continue
    parts = tuple(p for p in re.split(r"[/\\]", fields[0]) if p)
    clips.append(ListClip(where, parts, num_frames, label))
  return clips

