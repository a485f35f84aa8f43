"""RAF-DB basic (Li et al., CVPR 2017): 7-class aligned faces, train/test by name.

docs/datasets.md, 'RAF-DB'. Records are written in file-name order within each
split (train_00001, ...; SLM-AEA's batch-dependent evaluation depends on it).
"""

import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import features
from ferjax.data.builders import common
from ferjax.data.builders import ran_subsets

LIST_FILE = "basic/EmoLabel/list_patition_label.txt"
ALIGNED_DIR = "basic/Image/aligned"
# Native ids 1..7 (the list file); RAN/SCN/SLM-AEA lists use the same order 0-based.
NATIVE_NAMES = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")
TO_CANONICAL = common.canonical_ids(NATIVE_NAMES)
RAN_LISTS = (
    ran_subsets.SubsetList("test_pose30", "RAF_DB_dir/val_raf_db_list.txt",
                           r"(?P<cls>\d+)/(?P<key>test_\d+)_aligned\.jpg"),
    ran_subsets.SubsetList("test_pose45", "RAF_DB_dir/val_raf_db_list_45.txt",
                           r"(?P<cls>\d+)/(?P<key>test_\d+)_aligned\.jpg"),
    ran_subsets.SubsetList("test_occlusion", "RAF_DB_dir/rafdb_occlusion_list.txt",
                           r"(?P<key>test_\d+)_aligned (?P<cls>\d+) (?P<occ>\d+)"),
)
_LINE = re.compile(r"(?P<split>train|test)_\d+\.jpg (?P<label>\d+)")


def native_to_canonical(native: int) -> int:
  """Canonical id of a RAF-DB list-file label (1-based: 1 surprise ... 7 neutral)."""
  if not 1 <= native <= len(TO_CANONICAL):
    raise ValueError(f"RAF-DB labels are 1..7, got {native}")
  return TO_CANONICAL[native - 1]


def _load(path: pathlib.Path, stem: str, native: int) -> dict:
  label = native_to_canonical(native)
  return {"image": common.read_image(path), "label": label, "native_label": native,
          "id": stem, **ran_subsets.parent_fields(label)}


class Rafdb(common.ManualBuilder):
  """RAF-DB basic emotions, aligned 100x100 faces, plus RAN's pose/occlusion subsets."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put RAF-DB's `basic/` folder in manual_dir:
    <manual_dir>/basic/EmoLabel/list_patition_label.txt
    <manual_dir>/basic/Image/aligned/train_00001_aligned.jpg ... test_3068_aligned.jpg
  (one folder deeper is accepted too). For a flat folder of *_aligned.jpg files
  (SLM-AEA layout) pass `aligned_dir=PATH` (prepare: --aligned_dir); the list
  file is still read from manual_dir. Optional RAN subsets: the RAN repository's
  RAF_DB_dir/ folder in manual_dir, or `ran_dir=PATH` (prepare: --ran_dir)
  pointing at the folder that holds RAF_DB_dir/.
  """

  def __init__(self, *, aligned_dir: str | None = None, ran_dir: str | None = None,
               **kwargs):
    super().__init__(**kwargs)
    self._aligned_dir = aligned_dir
    self._ran_dir = ran_dir

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info({
        "image": features.encoded_image(),
        "label": features.canonical_label(7),
        "native_label": common.scalar(np.int32),
        "id": tfds.features.Text(),
        **ran_subsets.subset_features(7),
    }, homepage="http://www.whdeng.cn/raf/model1.html")

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    root = common.find_root(manual_dir, LIST_FILE)
    images = common.require(
        pathlib.Path(self._aligned_dir) if self._aligned_dir else root / ALIGNED_DIR,
        "the aligned image folder")
    rows = {"train": [], "test": []}
    for n, line in common.read_lines(root / LIST_FILE):
      match = _LINE.fullmatch(" ".join(line.split()))
      native = int(match["label"]) if match else 0
      if match is None or not 1 <= native <= 7:
        reason = "malformed line" if match is None else f"unknown label {native}"
        self.report.skip("list", f"{LIST_FILE}:{n}", f"{reason}: {line!r}")
        continue
      rows[match["split"]].append((line.split()[0], native))
    splits = {}
    for split, items in rows.items():
      splits[split] = []
      for name, native in sorted(items, key=lambda item: item[0]):
        stem = name.removesuffix(".jpg")
        splits[split].append(common.entry(stem, _load, images / f"{stem}_aligned.jpg",
                                          stem, native))
    ran_dir = pathlib.Path(self._ran_dir) if self._ran_dir else manual_dir
    splits.update(ran_subsets.subset_entries(
        self.report, ran_dir, lists=RAN_LISTS, parent=splits["test"],
        to_canonical=TO_CANONICAL, required=self._ran_dir is not None))
    return splits
