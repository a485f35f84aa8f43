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
    """(clip id, official label, test fold, list frame count) from DFEW_set_<k>_test.txt.

    The train lists are not needed (fold k's train list is the other folds' test
    lists) but are checked against the test lists; disagreements go to the report.
    """
    rows, train_lists = [], []
    for path in dfer_lists.list_file_paths(self._list_files, self.builder_config, "dfew"):
      fold, split = dfer_lists.dfew_fold_of(path)
      if split == "train":
        train_lists.append((fold, path))
        continue
      for clip in dfer_lists.read_list(self.report, folds.SPLIT, path):
        clip_id = self._clip_id(clip)
        if clip_id is not None:
          rows.append((clip_id, clip.label + 1, fold, clip.num_frames))
    by_id = {clip_id: (native, fold, n) for clip_id, native, fold, n in rows}
    for fold, path in train_lists:
      self._check_train_list(fold, path, by_id)
    return rows

  def _clip_id(self, clip: dfer_lists.ListClip) -> int | None:
    if not clip.parts[-1].isdigit():
      self.report.skip(folds.SPLIT, clip.where,
                       f"no clip id at the end of {'/'.join(clip.parts)}")
      return None
    return int(clip.parts[-1])

  def _check_train_list(self, fold: int, path: pathlib.Path,
                        test_rows: dict[int, tuple[int, int, int]]) -> None:
    """Notes where fold `fold`'s train list disagrees with the test lists (which are used)."""
    frames, labels, wrong_fold = [], [], []
    for clip in dfer_lists.read_list(self.report, folds.SPLIT, path):
      clip_id = self._clip_id(clip)
      if clip_id is None:
        continue
      if clip_id not in test_rows:
        wrong_fold.append(f"{clip_id:05d} (in no test list)")
        continue
      native, test_fold, num_frames = test_rows[clip_id]
      if test_fold == fold:
        wrong_fold.append(f"{clip_id:05d} (in this fold's test list)")
      if clip.label + 1 != native:
        labels.append(f"{clip_id:05d} (train {clip.label}, test {native - 1})")
      if clip.num_frames != num_frames:
        frames.append(f"{clip_id:05d} (train {clip.num_frames}, test {num_frames})")
    for what, clips in (("frame count", frames), ("label", labels), ("fold", wrong_fold)):
      if clips:
        self.report.notes.append(
            f"{path.name}: {len(clips)} clip(s) whose {what} disagrees with the test lists "
            f"(the test lists are used): {', '.join(clips)}")
    if not (frames or labels or wrong_fold):
      self.report.notes.append(f"{path.name} agrees with the test lists")
