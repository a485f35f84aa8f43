"""AffectNet (Mollahosseini et al., 2017): the CSV and the npy releases, 8 classes.

docs/datasets.md, 'AffectNet'. Native expression ids 0-7 are the canonical ids
(identity); CSV rows with 8 (none), 9 (uncertain) or 10 (no-face) are excluded
by protocol. train = training.csv / train_set, test = validation.csv / val_set
(the official protocol; the real test set is not public). 8-class data are
stored; the 7-class view is a reader filter (label < 7). Records are written in
CSV row order (CSV release) or numeric id order (npy release).
"""

import csv
import dataclasses
import functools
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import features
from ferjax.data.builders import common
from ferjax.data.builders import ran_subsets

LISTS_DIR = "Manually_Annotated_file_lists"
IMAGES_DIR = "Manually_Annotated_Images"
CSV_FILES = {"train": "training.csv", "test": "validation.csv"}
NPY_DIRS = {"train": "train_set", "test": "val_set"}
HEADER_FIRST_FIELD = "subDirectory_filePath"
EXCLUDED = {8: "none", 9: "uncertain", 10: "no-face"}
NUM_LANDMARKS = 68
RAN_LISTS = (
    ran_subsets.SubsetList("test_pose30", "AffectNet_dir/pose_30_affectnet_list.txt",
                           r"(?P<cls>\d+)/(?P<key>[0-9a-fA-F]{56})\.\w+"),
    ran_subsets.SubsetList("test_pose45", "AffectNet_dir/pose_45_affectnet_list.txt",
                           r"(?P<cls>\d+)/(?P<key>[0-9a-fA-F]{56})/\w+\.\w+"),
    ran_subsets.SubsetList("test_occlusion", "AffectNet_dir/occlusion_affectnet_list.txt",
                           r"\w+/(?P<cls>\d+)/(?P<key>[0-9a-fA-F]{56})/?"),
)


@dataclasses.dataclass(eq=False)
class AffectnetConfig(tfds.core.BuilderConfig):
  """Which release to read, and for the CSV release how to crop.

  Attributes:
    release: 'csv' (Manually_Annotated) or 'npy' (train_set/val_set).
    crop: crop the CSV release's original images to the CSV face box.
    crop_margin: grow the box by this fraction of its width/height on each side.
  """
  release: str = "csv"
  crop: bool = True
  crop_margin: float = 0.0


@dataclasses.dataclass(frozen=True)
class _CsvRow:
  path: str
  box: tuple[int, int, int, int]
  landmarks: str
  expression: int
  valence: float
  arousal: float


def _parse_csv_row(fields: list[str]) -> _CsvRow:
  """A training/validation.csv row; ValueError naming the bad field."""
  if len(fields) != 9:
    raise ValueError(f"{len(fields)} fields instead of 9")
  names = ("face_x", "face_y", "face_width", "face_height")
  try:
    box = tuple(int(float(v)) for v in fields[1:5])
  except ValueError:
    raise ValueError(f"non-numeric face box {dict(zip(names, fields[1:5]))}") from None
  try:
    valence, arousal = float(fields[7]), float(fields[8])
  except ValueError:
    raise ValueError(f"non-numeric valence/arousal {fields[7]!r}, {fields[8]!r}") from None
  return _CsvRow(fields[0], box, fields[5], int(fields[6]), valence, arousal)


@functools.lru_cache(maxsize=None)
def _folder_index(folder: str) -> dict[str, str]:
  """Lower-cased file stem -> file name, for one image sub-directory."""
  try:
    names = os.listdir(folder)
  except FileNotFoundError:
    return {}
  return {os.path.splitext(name)[0].lower(): name for name in names}


def _resolve(images: pathlib.Path, sub_path: str) -> pathlib.Path:
  """The image file of a CSV path, matching the extension case-insensitively."""
  path = images / sub_path
  if path.exists():
    return path
  name = _folder_index(str(path.parent)).get(pathlib.PurePath(sub_path).stem.lower())
  if name is None:
    raise common.SkipItem(f"missing image {path} (any extension)")
  return path.parent / name


def _crop(data: bytes, path: pathlib.Path, box: tuple[int, int, int, int],
          margin: float) -> bytes:
  """The face box (x, y, w, h) grown by `margin` on each side, clipped, re-encoded."""
  image = common.decode(data, str(path))
  image_format = image.format
  x, y, w, h = box
  x0, y0 = max(round(x - margin * w), 0), max(round(y - margin * h), 0)
  x1 = min(round(x + w + margin * w), image.width)
  y1 = min(round(y + h + margin * h), image.height)
  if w <= 0 or h <= 0 or x1 <= x0 or y1 <= y0:
    raise common.SkipItem(f"face box {box} is empty or outside the "
                          f"{image.width}x{image.height} image {path}")
  return common.encode(image.crop((x0, y0, x1, y1)), image_format)


def _landmarks(values: list[str], what: str) -> np.ndarray:
  try:
    array = np.asarray([float(v) for v in values], np.float32)
  except ValueError:
    raise common.SkipItem(f"non-numeric landmarks in {what}") from None
  if array.size != 2 * NUM_LANDMARKS:
    raise common.SkipItem(f"{array.size} landmark values instead of {2 * NUM_LANDMARKS} "
                          f"in {what}")
  return array


def _load_csv_row(images: pathlib.Path, row: _CsvRow, key: str,
                  config: AffectnetConfig) -> dict:
  path = _resolve(images, row.path)
  landmarks = _landmarks(row.landmarks.split(";"), f"the row of {row.path}")
  if config.crop:
    image = _crop(common.read_file(path), path, row.box, config.crop_margin)
  else:
    image = common.read_image(path)
  return {"image": image, "label": row.expression, "native_label": row.expression,
          "id": key, "face_box": np.asarray(row.box, np.int32), "landmarks": landmarks,
          "valence": row.valence, "arousal": row.arousal,
          **ran_subsets.parent_fields(row.expression)}


def _load_npy(split_dir: pathlib.Path, image: pathlib.Path) -> dict:
  key = image.stem
  annotations = split_dir / "annotations"
  values = {}
  for suffix in ("exp", "val", "aro", "lnd"):
    path = annotations / f"{key}_{suffix}.npy"
    try:
      values[suffix] = np.load(path, allow_pickle=False)
    except FileNotFoundError:
      raise common.SkipItem(f"missing file {path}") from None
    except (OSError, ValueError) as e:
      raise common.SkipItem(f"unreadable file {path}: {e}") from None
  try:
    expression = int(str(values["exp"].item()).strip())
    valence, arousal = float(values["val"].item()), float(values["aro"].item())
  except ValueError as e:
    raise common.SkipItem(f"bad annotation for {key}: {e}") from None
  if not 0 <= expression <= 7:
    raise common.SkipItem(f"expression {expression} outside 0..7 in {key}_exp.npy")
  landmarks = _landmarks([str(v) for v in values["lnd"].reshape(-1)], f"{key}_lnd.npy")
  return {"image": common.read_image(image), "label": expression,
          "native_label": expression, "id": key, "landmarks": landmarks,
          "valence": valence, "arousal": arousal}


class Affectnet(common.ManualBuilder):
  """AffectNet, 8 expression classes, CSV release (cropped or full) or npy release."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      AffectnetConfig(name="csv", description="CSV release, cropped to the face box."),
      AffectnetConfig(name="csv_full", crop=False,
                      description="CSV release, images as shipped (box stored)."),
      AffectnetConfig(name="npy", release="npy", crop=False,
                      description="npy release (pre-cropped faces)."),
  ]
  DEFAULT_CONFIG_NAME = "csv"
  EXAMPLES_PER_SHARD = 2000  # csv_full stores the original downloads (up to MBs each)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  CSV release (configs csv, csv_full), in manual_dir or one folder deeper
  (e.g. Manually_Annotated/):
    <manual_dir>/Manually_Annotated_file_lists/training.csv, validation.csv
    <manual_dir>/Manually_Annotated_Images/<subDirectory>/<file>
  Optional RAN subsets: the RAN repository's AffectNet_dir/ in manual_dir, or
  `ran_dir=PATH` (prepare: --ran_dir) pointing at the folder that holds it.
  npy release (config npy), in manual_dir or one folder deeper:
    <manual_dir>/train_set/images/<id>.jpg, train_set/annotations/<id>_{exp,val,aro,lnd}.npy
    <manual_dir>/val_set/... (same layout)
  """

  def __init__(self, *, ran_dir: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self._ran_dir = ran_dir

  def _info(self) -> tfds.core.DatasetInfo:
    feature_dict = {
        "image": features.encoded_image(),
        "label": features.canonical_label(8),
        "native_label": common.scalar(np.int32),
        "id": tfds.features.Text(),
        "landmarks": tfds.features.Tensor(shape=(2 * NUM_LANDMARKS,), dtype=np.float32),
        "valence": common.scalar(np.float32),
        "arousal": common.scalar(np.float32),
    }
    if self.builder_config.release == "csv":
      feature_dict["face_box"] = tfds.features.Tensor(shape=(4,), dtype=np.int32)
      feature_dict.update(ran_subsets.subset_features(8))
    return self._dataset_info(feature_dict, homepage="http://mohammadmahoor.com/affectnet/")

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    if self.builder_config.release == "npy":
      return self._npy_entries(manual_dir)
    return self._csv_entries(manual_dir)

  def _csv_entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    lists = common.find_root(manual_dir, f"{LISTS_DIR}/{CSV_FILES['train']}") / LISTS_DIR
    images = common.find_root(manual_dir, IMAGES_DIR) / IMAGES_DIR
    splits, left_out = {}, {}
    for split, file_name in CSV_FILES.items():
      entries = splits[split] = []
      with common.open_text(common.require(lists / file_name)) as lines:
        reader = csv.reader(lines)
        for fields in reader:
          where = f"{file_name}:{reader.line_num}"
          if not fields or (reader.line_num == 1 and fields[0] == HEADER_FIRST_FIELD):
            continue
          if len(fields) > 6 and fields[6].strip() in map(str, EXCLUDED):
            reason = f"expression {fields[6].strip()} ({EXCLUDED[int(fields[6])]})"
            self.report.exclude(split, reason)
            if split == "test":
              left_out[pathlib.PurePath(fields[0].strip()).stem] = reason
            continue
          try:
            row = _parse_csv_row(fields)
          except ValueError as e:
            self.report.skip(split, where, f"malformed row: {e}")
            continue
          if not 0 <= row.expression <= 7:
            self.report.skip(split, where, f"unknown expression {row.expression}")
            continue
          key = pathlib.PurePath(row.path).stem
          entries.append(common.entry(key, _load_csv_row, images, row, key,
                                      self.builder_config))
    ran_dir = pathlib.Path(self._ran_dir) if self._ran_dir else manual_dir
    splits.update(ran_subsets.subset_entries(
        self.report, ran_dir, lists=RAN_LISTS, parent=splits["test"],
        to_canonical=tuple(range(8)), required=self._ran_dir is not None,
        left_out=left_out))
    return splits

  def _npy_entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    root = common.find_root(manual_dir, f"{NPY_DIRS['train']}/images")
    splits = {}
    for split, dir_name in NPY_DIRS.items():
      split_dir = root / dir_name
      images = common.require(split_dir / "images")
      common.require(split_dir / "annotations")
      files = [p for p in images.iterdir() if p.is_file() and not p.name.startswith(".")]
      files.sort(key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0,
                                p.name))
      splits[split] = [common.entry(p.stem, _load_npy, split_dir, p) for p in files]
    return splits
