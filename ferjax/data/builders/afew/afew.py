"""AFEW 7.0 (EmotiW): movie clips, 7 classes; the Val set is the test set.

docs/datasets.md, 'AFEW 7.0'. The distribution ships .avi files; the user
extracts face frames to <root>/{Train_AFEW,Val_AFEW}/<Emotion>/<clip id>/ (any
image files, read in lexicographic order). train = Train_AFEW, test = Val_AFEW.
Records are written in (emotion folder, clip id) order.
"""

import pathlib
import re
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import features, labels
from ferjax.data.builders import common
from ferjax.data.builders import dfer_lists

SPLIT_DIRS = {"train": "Train_AFEW", "test": "Val_AFEW"}
LIST_ORDERS = {"lstpnet": dfer_lists.CANONICAL_ORDER, "former_dfer": dfer_lists.DFEW_ORDER}
_FORMER_DFER_NAME = re.compile(r"\d+_\d+_(?P<clip>\d+)")


def _load(folder: pathlib.Path, clip: str, emotion: str, label: int,
          num_frames: int | None) -> dict:
  frames = common.read_clip(folder, None, num_frames)
  return {"frames": frames, "num_frames": len(frames), "label": label,
          "native_label": emotion, "id": clip}


class Afew(common.ManualBuilder):
  """AFEW clips (user-extracted face frames), 7 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = dfer_lists.clip_configs("AFEW")
  DEFAULT_CONFIG_NAME = "official"
  EXAMPLES_PER_SHARD = 1000
  INDEX_FEATURES = ("label", "num_frames")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Extract the face frames of every clip, then in manual_dir (or one folder deeper):
    <manual_dir>/Train_AFEW/<Emotion>/<clip id>/<frames>
    <manual_dir>/Val_AFEW/<Emotion>/<clip id>/<frames>
  Emotion folders: Angry|Anger, Disgust, Fear, Happy|Happiness, Neutral,
  Sad|Sadness, Surprise. Configs lstpnet / former_dfer read that repository's
  AFEW_{train,test|validation}.txt lists instead: `list_files=PATH,...` (prepare:
  --list_file); a list path is matched by its last component inside the
  emotion folder of its label: the clip id, or Former-DFER's
  <split>_<label>_<clip id> folder name (either folder name is found).
  """

  def __init__(self, *, list_files: str | Sequence[str] | None = None, **kwargs):
    super().__init__(**kwargs)
    self._list_files = list_files

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info({
        "frames": features.encoded_frames(),
        "num_frames": common.scalar(np.int32),
        "label": features.canonical_label(7),
        "native_label": tfds.features.Text(),
        "id": tfds.features.Text(),
    }, homepage="https://sites.google.com/site/emotiwchallenge/")

  def _emotion_folders(self, split: str, split_dir: pathlib.Path) -> dict[int, pathlib.Path]:
    """Canonical id -> emotion folder of a split; unknown folders and files are reported."""
    folders = {}
    for path in sorted(split_dir.iterdir()):
      label = common.emotion_word_id(path.name) if path.is_dir() else None
      if label is None or label > 6:
        if not path.name.startswith("."):
          self.report.skip(split, path.name, f"not an emotion folder: {path}")
        continue
      folders[label] = path
    return folders

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    root = common.find_root(manual_dir, SPLIT_DIRS["train"])
    folders = {split: self._emotion_folders(split, common.require(root / name))
               for split, name in SPLIT_DIRS.items()}
    if self.builder_config.list_order:
      return self._list_entries(folders)
    splits = {}
    for split, by_label in folders.items():
      splits[split] = []
      for label, folder in sorted(by_label.items(), key=lambda item: item[1].name):
        for clip in sorted(folder.iterdir()):
          key = f"{folder.name}/{clip.name}"
          if clip.name.startswith("."):
            continue
          if not clip.is_dir():
            self.report.skip(split, key, "not a frame folder (extract each clip's frames "
                             "to <Emotion>/<clip id>/)")
            continue
          splits[split].append(common.entry(key, _load, clip, key, folder.name, label, None))
      if not splits[split]:
        raise common.LayoutError(f"expected frame folders {root / SPLIT_DIRS[split]}"
                                 "/<Emotion>/<clip id>/ (extract the frames of each .avi)")
    return splits

  def _list_entries(self, folders: dict[str, dict[int, pathlib.Path]]):
    order = common.canonical_ids(LIST_ORDERS[self.builder_config.list_order])
    splits = {}
    for path in dfer_lists.list_file_paths(self._list_files, self.builder_config, "afew"):
      split = dfer_lists.split_of(path)
      for clip in dfer_lists.read_list(self.report, split, path):
        label = order[clip.label]
        path_label = common.emotion_word_id(clip.parts[-2]) if len(clip.parts) > 1 else None
        if path_label is not None and path_label != label:
          self.report.skip(split, clip.where, f"path emotion {clip.parts[-2]} disagrees with "
                           f"the label {labels.CLASS_NAMES_8[label]}")
          continue
        if label not in folders[split]:
          self.report.skip(split, clip.where, f"no {labels.CLASS_NAMES_8[label]} folder in "
                           f"{SPLIT_DIRS[split]}")
          continue
        folder = folders[split][label]
        clip_id, frames = _clip_folder(folder, clip.parts[-1])
        key = f"{folder.name}/{clip_id}"
        splits.setdefault(split, []).append(common.entry(
            key, _load, frames, key, folder.name, label, clip.num_frames))
    return splits


def _clip_folder(emotion_folder: pathlib.Path, name: str) -> tuple[str, pathlib.Path]:
  """(clip id, frame folder) of a list path's last component inside an emotion folder.

  Former-DFER names its folders `<split>_<label>_<clip id>` (e.g. 0_5_011756043);
  the folder may carry that name or AFEW's bare clip id. The id is the bare one.
  """
  match = _FORMER_DFER_NAME.fullmatch(name)
  clip_id = match["clip"] if match else name
  for candidate in (name, clip_id):
    if (emotion_folder / candidate).is_dir():
      return clip_id, emotion_folder / candidate
  return clip_id, emotion_folder / name
