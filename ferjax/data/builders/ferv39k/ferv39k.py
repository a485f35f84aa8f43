"""FERV39k (Wang et al., CVPR 2022): 38,935 clips from 22 scenes, 7 classes.

docs/datasets.md, 'FERV39k'. train = 4_setups/All_scenes/train_All.csv, test =
test_All.csv (space-delimited `<Scene>/<Emotion>/<clip> <Emotion>`, no header).
Frames are all `*.jpg` files of 2_ClipsforFaceCrop/<Scene>/<Emotion>/<clip>/ in
lexicographic order. Records are written in the split file's line order.
"""

import pathlib
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import features, labels
from ferjax.data.builders import common
from ferjax.data.builders import dfer_lists

SPLIT_FILES = {"train": "4_setups/All_scenes/train_All.csv",
               "test": "4_setups/All_scenes/test_All.csv"}
FRAMES_DIR = "2_ClipsforFaceCrop"
# List-file label orders: LSTPNet uses the canonical order, Former-DFER DFEW's.
LIST_ORDERS = {"lstpnet": dfer_lists.CANONICAL_ORDER, "former_dfer": dfer_lists.DFEW_ORDER}


def _load(folder: pathlib.Path, clip: str, scene: str, emotion: str, label: int,
          num_frames: int | None) -> dict:
  frames = common.read_clip(folder, (".jpg",), num_frames)
  return {"frames": frames, "num_frames": len(frames), "label": label,
          "native_label": emotion, "id": clip, "scene": scene}


class Ferv39k(common.ManualBuilder):
  """FERV39k clips, 7 classes, all frames, with their scene."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = dfer_lists.clip_configs("FERV39k")
  DEFAULT_CONFIG_NAME = "official"
  EXAMPLES_PER_SHARD = 1000
  INDEX_FEATURES = ("label", "num_frames")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  In manual_dir (or its FERV39k/ folder):
    <manual_dir>/FERV39k/4_setups/All_scenes/train_All.csv, test_All.csv
    <manual_dir>/FERV39k/2_ClipsforFaceCrop/<Scene>/<Emotion>/<4-digit clip>/*.jpg
  Configs lstpnet / former_dfer read that repository's FERV39k_{train,test}.txt
  (or FERV39K_...) lists instead: `list_files=PATH,...` (prepare: --list_file);
  their paths are matched by the last three components <Scene>/<Emotion>/<clip>.
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
        "scene": tfds.features.Text(),
    }, homepage="https://wangyanckxx.github.io/Proj_CVPR2022_FERV39k.html")

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    root = common.find_root(manual_dir, FRAMES_DIR)
    frames = root / FRAMES_DIR
    if self.builder_config.list_order:
      rows = self._list_rows()
    else:
      rows = self._official_rows(root)
    splits = {}
    for split, clips in rows.items():
      splits[split] = []
      for where, parts, label, num_frames in clips:
        scene, emotion, _ = parts
        if common.emotion_word_id(emotion) != label:
          self.report.skip(split, where, f"path emotion {emotion} disagrees with the label "
                           f"{labels.CLASS_NAMES_8[label]}")
          continue
        clip = "/".join(parts)
        splits[split].append(common.entry(clip, _load, frames.joinpath(*parts), clip, scene,
                                          emotion, label, num_frames))
    return splits

  def _official_rows(self, root: pathlib.Path):
    """split -> (where, (scene, emotion, clip), canonical label, None) per CSV line."""
    rows = {}
    for split, name in SPLIT_FILES.items():
      path = common.require(root / name)
      rows[split] = []
      for n, line in common.read_lines(path):
        where = f"{path.name}:{n}"
        fields = line.split()
        parts = tuple(fields[0].split("/")) if fields else ()
        if len(fields) != 2 or len(parts) != 3:
          self.report.skip(split, where, f"malformed line: {line!r}")
          continue
        label = common.emotion_word_id(fields[1])
        if label is None or label > 6:
          self.report.skip(split, where, f"unknown emotion {fields[1]!r}")
          continue
        rows[split].append((where, parts, label, None))
    return rows

  def _list_rows(self):
    """split -> (where, (scene, emotion, clip), canonical label, frame count) per list line."""
    order = common.canonical_ids(LIST_ORDERS[self.builder_config.list_order])
    rows = {}
    for path in dfer_lists.list_file_paths(self._list_files, self.builder_config, "ferv39k"):
      split = dfer_lists.split_of(path)
      for clip in dfer_lists.read_list(self.report, split, path):
        if len(clip.parts) < 3:
          self.report.skip(split, clip.where, "the frame folder has fewer than 3 components")
          continue
        rows.setdefault(split, []).append((clip.where, clip.parts[-3:], order[clip.label],
                                           clip.num_frames))
    return rows
