"""DFEW (Jiang et al., ACM MM 2020): 11,697 single-labelled clips in 5 folds.

docs/datasets.md, 'DFEW'. Every clip is stored once, in split `all_folds`
(folds.SPLIT; not `all`, a name TFDS reserves), with `test_fold` 1..5,
the official test set that holds it; fold k's train set is every clip with
test_fold != k (see ferjax.data.builders.folds). Frames are all `*.jpg` files
of Clip/clip_224x224/<id>/ in lexicographic order. Records are written in
clip-id order.
"""

import csv
import pathlib
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import features
from ferjax.data.builders import common
from ferjax.data.builders import dfer_lists
from ferjax.data.builders import folds

TEST_CSV = "EmoLabel_DataSplit/test(single-labeled)/set_{fold}.csv"
CLIP_DIR = "Clip/clip_224x224"
# Official labels 1..7; DFEW list files use the same order 0-based.
TO_CANONICAL = common.canonical_ids(dfer_lists.DFEW_ORDER)


def native_to_canonical(native: int) -> int:
  """Canonical id of an official DFEW label (1 happy ... 7 fear)."""
  if not 1 <= native <= len(TO_CANONICAL):
    raise ValueError(f"DFEW labels are 1..7, got {native}")
  return TO_CANONICAL[native - 1]


def _load(folder: pathlib.Path, clip_id: str, native: int, test_fold: int,
          num_frames: int | None) -> dict:
  frames = common.read_clip(folder, (".jpg",), num_frames)
  return {"frames": frames, "num_frames": len(frames), "label": native_to_canonical(native),
          "native_label": native, "id": clip_id, "test_fold": test_fold}


class Dfew(common.ManualBuilder):
  """DFEW clips, 7 classes, all frames, with their official test fold."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = dfer_lists.clip_configs("DFEW")
  DEFAULT_CONFIG_NAME = "official"
  EXAMPLES_PER_SHARD = 500
  INDEX_FEATURES = ("label", "num_frames", "test_fold")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  In manual_dir (or its DFEW/ folder):
    <manual_dir>/DFEW/EmoLabel_DataSplit/test(single-labeled)/set_1.csv ... set_5.csv
    <manual_dir>/DFEW/Clip/clip_224x224/<5-digit id>/*.jpg
  (the train(single-labeled) files are not needed: fold k's train set is the
  other folds' test sets). Configs lstpnet / former_dfer read that repository's
  DFEW_set_<k>_test.txt lists instead: `list_files=PATH,...` (prepare:
  --list_file); their paths are matched by the clip id (last path component).
  """

  def __init__(self, *, list_files: str | Sequence[str] | None = None, **kwargs):
    super().__init__(**kwargs)
    self._list_files = list_files

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info({
        "frames": features.encoded_frames(),
        "num_frames": common.scalar(np.int32),
        "label": features.canonical_label(7),
        "native_label": common.scalar(np.int32),
        "id": tfds.features.Text(),
        "test_fold": common.scalar(np.int32),
    }, homepage="https://dfew-dataset.github.io/")

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    root = common.find_root(manual_dir, CLIP_DIR)
    clips = root / CLIP_DIR
    if self.builder_config.list_order:
      rows = self._list_rows()
    else:
      rows = self._official_rows(root)
    rows.sort(key=lambda row: row[0])
    return {folds.SPLIT: [
        common.entry(f"{clip:05d}", _load, clips / f"{clip:05d}", f"{clip:05d}", native,
                     fold, num_frames)
        for clip, native, fold, num_frames in rows]}

  def _official_rows(self, root: pathlib.Path) -> list[tuple[int, int, int, None]]:
    """(clip id, official label, test fold, None) from the 5 official test CSVs."""
    rows = []
    for fold in range(1, folds.NUM_FOLDS + 1):
      path = common.require(root / TEST_CSV.format(fold=fold))
      with common.open_text(path) as lines:
        reader = csv.DictReader(lines)
        missing = {"video_name", "label"} - set(reader.fieldnames or ())
        if missing:
          raise common.AnnotationError(f"{path}: no column(s) {', '.join(sorted(missing))} "
                                       f"in header {reader.fieldnames}")
        for row in reader:
          try:
            clip, native = int(row["video_name"]), int(row["label"])
            native_to_canonical(native)
          except (TypeError, ValueError) as e:
            self.report.skip(folds.SPLIT,
                             f"{path.parent.name}/{path.name}:{reader.line_num}",
                             f"malformed row ({e}): {row}")
            continue
          rows.append((clip, native, fold, None))
    return rows

  def _list_rows(self) -> list[tuple[int, int, int, int]]:
    """(clip id, official label, test fold, list frame count) from DFEW_set_<k>_test.txt."""
    rows = []
    for path in dfer_lists.list_file_paths(self._list_files, self.builder_config, "dfew"):
      fold, split = dfer_lists.dfew_fold_of(path)
      if split == "train":
        self.report.notes.append(f"{path.name} ignored: a fold's train list is the other "
                                 "folds' test lists")
        continue
      for clip in dfer_lists.read_list(self.report, folds.SPLIT, path):
        if not clip.parts[-1].isdigit():
          self.report.skip(folds.SPLIT, clip.where,
                           f"no clip id at the end of {'/'.join(clip.parts)}")
          continue
        rows.append((int(clip.parts[-1]), clip.label + 1, fold, clip.num_frames))
    return rows
