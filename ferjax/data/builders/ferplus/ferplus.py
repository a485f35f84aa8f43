"""FERPlus (Barsoum et al., ICMI 2016): FER2013 faces relabelled by 10 annotators.

docs/datasets.md, 'FERPlus'. Pixels come from fer2013.csv (row-aligned with
fer2013new.csv, which names each row) or from the official PNG folders; votes
come from the per-split label.csv files (default; what the official training
code and RAN read) or from fer2013new.csv. For a name that occurs twice in
fer2013new.csv one image is kept: the last row's (the image the official
generator leaves on disk), or, with label.csv votes, the row those votes are
nearest to when the pixels come from fer2013.csv; the report notes each such
pairing. Records are written in name order within each split.
"""

import csv
import dataclasses
import pathlib
from typing import Sequence

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from ferjax.data import features
from ferjax.data.builders import common
from ferjax.data.builders import ran_subsets

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                "contempt", "unknown", "NF")
NUM_EMOTIONS = 8
# FER+ emotion column -> canonical id: 0, 1, 3, 2, 6, 5, 4, 7.
TO_CANONICAL = common.canonical_ids(
    ("neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt"))
SPLITS = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
LABEL_DIRS = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}
FER2013_HEADER = ["emotion", "pixels", "Usage"]
SIDE = 48
LABEL_RULES = ("majority", "argmax", "distribution")
VOTE_SOURCES = ("label_csv", "fer2013new")
RAN_LISTS = (
    ran_subsets.SubsetList("test_pose30", "FERplus_dir/pose_30_ferplus_list.txt",
                           r"(?P<cls>\d+)/(?P<key>fer\d+)\.\w+"),
    ran_subsets.SubsetList("test_pose45", "FERplus_dir/pose_45_ferplus_list.txt",
                           r"(?P<cls>\d+)/(?P<key>fer\d+)\.\w+"),
    ran_subsets.SubsetList("test_occlusion", "FERplus_dir/jianfei_occlusion_list.txt",
                           r"(?P<cls>\d+)_(?P<key>fer\d+)\.\w+ \d+ (?P<occ>\d+)"),
)


def majority_label(votes: Sequence[int]) -> int | None:
  """The official FER+ majority label (src/ferplus.py, mode 'majority').

  Counts <= 1 are zeroed; with S the sum of the rest, the label is the column
  argmax when its count exceeds S / 2 (no tie is then possible), else None
  ("unknown").

  Args:
    votes: the 10 vote counts in FER+ column order (VOTE_COLUMNS).

  Returns:
    The winning column 0..9 (8 unknown, 9 NF), or None when there is no majority.
  """
  kept = [v if v > 1 else 0 for v in votes]
  top = max(kept)
  if top > 0.5 * sum(kept):
    return kept.index(top)
  return None


def label_from_votes(votes: Sequence[int], rule: str) -> tuple[int | None, str]:
  """(FER+ emotion column 0..7, '') or (None, why the image is dropped) under `rule`.

  Rules: 'majority' (official); 'argmax' (first maximum over all 10 columns);
  'distribution' (images whose 8 emotion columns hold more votes than unknown
  and NF together, labelled by the first maximum over the emotion columns; meant
  to be trained on `soft_label`).
  """
  if rule == "majority":
    column = majority_label(votes)
    if column is None:
      return None, "majority: no majority (unknown)"
  elif rule == "argmax":
    column = int(np.argmax(votes))
  elif rule == "distribution":
    if sum(votes[:NUM_EMOTIONS]) <= sum(votes[NUM_EMOTIONS:]):
      return None, "distribution: most votes are unknown/NF"
    column = int(np.argmax(votes[:NUM_EMOTIONS]))
  else:
    raise ValueError(f"unknown FERPlus label rule {rule!r}; use one of {LABEL_RULES}")
  if column >= NUM_EMOTIONS:
    return None, f"{rule}: {VOTE_COLUMNS[column]}"
  return column, ""


def soft_label(votes: Sequence[int]) -> np.ndarray:
  """The emotion vote distribution `[8]` in canonical order (votes / their sum)."""
  emotion = np.asarray(votes[:NUM_EMOTIONS], np.float32)
  soft = np.zeros(NUM_EMOTIONS, np.float32)
  soft[list(TO_CANONICAL)] = emotion / max(emotion.sum(), 1.0)
  return soft


def _find(manual_dir: pathlib.Path, marker: str) -> pathlib.Path | None:
  """manual_dir/marker (or one folder deeper) if it exists, else None."""
  try:
    return common.find_root(manual_dir, marker) / marker
  except common.LayoutError:
    return None


def _votes(fields: Sequence[str]) -> list[int]:
  votes = [int(v) for v in fields]
  if len(votes) != len(VOTE_COLUMNS) or min(votes) < 0:
    raise ValueError(f"need {len(VOTE_COLUMNS)} non-negative vote counts")
  return votes


@dataclasses.dataclass(eq=False)
class FerplusConfig(tfds.core.BuilderConfig):
  """Vote source ('label_csv' or 'fer2013new') and label rule (LABEL_RULES)."""
  votes: str = "label_csv"
  label_rule: str = "majority"


@dataclasses.dataclass
class _Image:
  row: int = -1                        # fer2013new.csv data row (0-based), -1 unknown
  pixels: np.ndarray | None = None     # [48, 48] uint8 (CSV source)
  path: pathlib.Path | None = None     # PNG file (official PNG folders)


def _load(key: str, image: _Image, votes: list[int], column: int) -> dict:
  if image.pixels is not None:
    encoded = common.encode(PIL.Image.fromarray(image.pixels, "L"), "PNG")
  else:
    encoded = common.read_image(image.path)
  label = TO_CANONICAL[column]
  return {"image": encoded, "label": label, "native_label": column, "id": key,
          "votes": np.asarray(votes, np.int32), "soft_label": soft_label(votes),
          "row": image.row, **ran_subsets.parent_fields(label)}


class Ferplus(common.ManualBuilder):
  """FERPlus, 8 classes, 48x48 grayscale PNG, with the 10 raw votes per image."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      FerplusConfig(name=f"{votes}_{rule}", votes=votes, label_rule=rule,
                    description=f"votes from {votes}, {rule} labels")
      for votes in VOTE_SOURCES for rule in LABEL_RULES]
  DEFAULT_CONFIG_NAME = "label_csv_majority"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  In manual_dir (each also accepted one folder deeper):
    <manual_dir>/fer2013.csv        (Kaggle FER2013: emotion,pixels,Usage)
    <manual_dir>/fer2013new.csv     (FERPlus repository root)
    <manual_dir>/data/FER2013Train/label.csv, FER2013Valid/label.csv,
        FER2013Test/label.csv       (FERPlus repository data/ folder; needed for
                                     the label_csv_* configs)
  Instead of fer2013.csv the official PNG folders written by the FERPlus
  generate_training_data.py are accepted: data/FER2013{Train,Valid,Test}/fer*.png
  next to each label.csv. Optional RAN subsets: the RAN repository's FERplus_dir/
  in manual_dir, or `ran_dir=PATH` (prepare: --ran_dir).
  """

  def __init__(self, *, ran_dir: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self._ran_dir = ran_dir
    # Set per build: split -> name stem -> earlier (row, votes) of a repeated name
    # in fer2013new.csv; fer2013.csv rows (CSV source); split -> name stem -> why
    # an image with that name is not in the split.
    self._earlier: dict[str, dict[str, list[tuple[int, list[int]]]]] = {}
    self._pixels: dict[int, tuple[str, np.ndarray | None]] = {}
    self._left_out: dict[str, dict[str, str]] = {}

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info({
        "image": features.encoded_image(),
        "label": features.canonical_label(8),
        "native_label": common.scalar(np.int32),
        "id": tfds.features.Text(),
        "votes": tfds.features.Tensor(shape=(len(VOTE_COLUMNS),), dtype=np.int32),
        "soft_label": tfds.features.Tensor(shape=(NUM_EMOTIONS,), dtype=np.float32),
        "row": common.scalar(np.int32),
        **ran_subsets.subset_features(8),
    }, homepage="https://github.com/microsoft/FERPlus")

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    config = self.builder_config
    fer2013 = _find(manual_dir, "fer2013.csv")
    fer2013new = _find(manual_dir, "fer2013new.csv")
    label_root = _find(manual_dir, f"{LABEL_DIRS['train']}/label.csv")
    missing = []
    if fer2013 is None and label_root is None:
      missing.append(f"{manual_dir / 'fer2013.csv'} (or the official PNG folders "
                     f"{manual_dir / 'data' / LABEL_DIRS['train']}/fer*.png)")
    if fer2013new is None and (fer2013 is not None or config.votes == "fer2013new"):
      missing.append(str(manual_dir / "fer2013new.csv"))
    if label_root is None and config.votes == "label_csv":
      missing.append(str(manual_dir / "data" / LABEL_DIRS["train"] / "label.csv"))
    if missing:
      raise common.LayoutError(f"ferplus/{config.name} expected {' and '.join(missing)} "
                               "(each also one folder deeper); see docs/datasets.md")
    label_root = label_root and label_root.parent.parent
    self._earlier, self._pixels = {split: {} for split in LABEL_DIRS}, {}
    self._left_out = {split: {} for split in LABEL_DIRS}
    new_rows, num_new_rows = self._read_fer2013new(fer2013new) if fer2013new else (None, 0)
    images = self._images(fer2013, new_rows, num_new_rows, label_root)
    if config.votes == "label_csv":
      votes = {split: self._read_label_csv(label_root / name / "label.csv", split)
               for split, name in LABEL_DIRS.items()}
    else:
      votes = {split: {key: v for key, (_, v) in rows.items()}
               for split, rows in new_rows.items()}
    splits = {split: self._join(split, images[split], votes[split], new_rows)
              for split in LABEL_DIRS}
    ran_dir = pathlib.Path(self._ran_dir) if self._ran_dir else manual_dir
    splits.update(ran_subsets.subset_entries(
        self.report, ran_dir, lists=RAN_LISTS, parent=splits["test"],
        to_canonical=TO_CANONICAL, required=self._ran_dir is not None,
        left_out=self._left_out["test"]))
    return splits

  def _read_fer2013new(self, path: pathlib.Path
                       ) -> tuple[dict[str, dict[str, tuple[int, list[int]]]], int]:
    """(split -> name stem -> (row, votes), number of data rows).

    The last row wins for repeated names; rows without a name (non-faces) are
    excluded by protocol.
    """
    rows = {split: {} for split in LABEL_DIRS}
    row = -1
    with common.open_text(path) as lines:
      reader = csv.reader(lines)
      header = next(reader, [])
      if len(header) != 2 + len(VOTE_COLUMNS) or header[0] != "Usage":
        raise common.AnnotationError(f"{path}: header {','.join(header)!r} is not "
                                     "Usage,Image name,<10 vote columns>")
      for row, fields in enumerate(reader):
        where = f"{path.name}:{reader.line_num}"
        split = SPLITS.get(fields[0]) if fields else None
        if split is None:
          self.report.skip("fer2013new.csv", where, f"unknown Usage in {fields[:1]!r}")
          continue
        name = fields[1].strip() if len(fields) > 1 else ""
        if not name:
          self.report.exclude(split, "no image name (not a face)")
          continue
        try:
          votes = _votes(fields[2:])
        except ValueError as e:
          self.report.skip(split, where, f"malformed votes: {e}")
          continue
        key = pathlib.PurePath(name).stem
        if key in rows[split]:
          earlier = rows[split][key]
          self._earlier[split].setdefault(key, []).append(earlier)
          self.report.skip(split, f"{path.name} row {earlier[0]}",
                           f"duplicate name {key}; the later row {row} is kept")
        rows[split][key] = (row, votes)
    return rows, row + 1

  def _images(self, fer2013: pathlib.Path | None, new_rows, num_new_rows: int,
              label_dirs: pathlib.Path | None) -> dict[str, dict[str, _Image]]:
    """split -> name stem -> where its pixels are (None: unusable, already reported).

    Raises:
      AnnotationError: when fer2013.csv is not row-aligned with fer2013new.csv.
    """
    images = {split: {} for split in LABEL_DIRS}
    if fer2013 is None:  # official PNG folders
      for split, name in LABEL_DIRS.items():
        for path in sorted(common.require(label_dirs / name).glob("*.png")):
          row = new_rows[split][path.stem][0] if new_rows and path.stem in new_rows[split] else -1
          images[split][path.stem] = _Image(row=row, path=path)
      return images
    self._pixels, num_rows = self._read_fer2013(fer2013)
    if num_rows != num_new_rows:
      raise common.AnnotationError(
          f"{fer2013} has {num_rows} data rows but fer2013new.csv has {num_new_rows}; "
          "the two files must be row-aligned")
    for split, rows in new_rows.items():
      for key, (row, _) in rows.items():
        images[split][key] = self._csv_image(split, key, row)
    return images

  def _csv_image(self, split: str, key: str, row: int) -> _Image | None:
    """The pixels of fer2013.csv data `row` for image `key`; None (reported) if unusable."""
    usage, values = self._pixels[row]
    if values is None:
      self.report.skip(split, key, f"fer2013.csv row {row}: pixels are not "
                                   f"{SIDE * SIDE} values in 0..255")
      return None
    if SPLITS.get(usage) != split:
      self.report.skip(split, key, f"fer2013.csv row {row} is {usage}, "
                                   f"fer2013new.csv says {split}")
      return None
    return _Image(row=row, pixels=values)

  def _read_fer2013(self, path: pathlib.Path
                    ) -> tuple[dict[int, tuple[str, np.ndarray]], int]:
    """(data row -> (Usage, [48, 48] uint8 pixels or None if malformed), number of rows)."""
    out = {}
    row = -1
    with common.open_text(path) as lines:
      reader = csv.reader(lines)
      header = next(reader, [])
      if header != FER2013_HEADER:
        raise common.AnnotationError(f"{path}: header {','.join(header)!r} is not "
                                     f"{','.join(FER2013_HEADER)}")
      for row, fields in enumerate(reader):
        try:
          values = np.asarray(fields[1].split(), np.int64)
        except (IndexError, ValueError):
          values = np.zeros(0)
        usage = fields[2].strip() if len(fields) > 2 else ""
        if values.size != SIDE * SIDE or values.min() < 0 or values.max() > 255:
          out[row] = (usage, None)
        else:
          out[row] = (usage, values.astype(np.uint8).reshape(SIDE, SIDE))
    return out, row + 1

  def _read_label_csv(self, path: pathlib.Path, split: str) -> dict[str, list[int]]:
    """name stem -> votes, from a headerless `name,"(x, y, w, h)",<10 votes>` file."""
    votes = {}
    with common.open_text(common.require(path)) as lines:
      reader = csv.reader(lines)
      for fields in reader:
        where = f"{path.parent.name}/{path.name}:{reader.line_num}"
        try:
          if len(fields) != 2 + len(VOTE_COLUMNS):
            raise ValueError(f"{len(fields)} fields instead of {2 + len(VOTE_COLUMNS)}")
          key, line_votes = pathlib.PurePath(fields[0].strip()).stem, _votes(fields[2:])
          if key in votes:
            self.report.skip(split, where, f"duplicate name {key}; the later line is kept")
          votes[key] = line_votes
        except ValueError as e:
          self.report.skip(split, where, f"malformed line: {e}")
    return votes

  def _join(self, split: str, images: dict[str, _Image | None],
            votes: dict[str, list[int]], new_rows: dict | None) -> list[common.Entry]:
    """The split's entries in name order; names left out are kept in `self._left_out`."""
    entries = []
    left_out = self._left_out[split]
    label_csv = self.builder_config.votes == "label_csv"
    source = "label.csv" if label_csv else "fer2013new.csv"
    for key in sorted(set(images) | set(votes)):
      image = images.get(key)
      if key in votes and image is not None and label_csv and key in self._earlier[split]:
        image = self._pair_repeated(split, key, image, votes[key], new_rows[split][key])
      if key in images and image is None:
        left_out[key] = "its image is unusable (skipped)"
      elif key not in votes:
        self.report.skip(split, key, f"no votes in {source}")
        left_out[key] = f"no votes in {source}"
      elif key not in images:
        self.report.skip(split, key, "no image with this name")
        left_out[key] = "no image with this name"
      else:
        column, reason = label_from_votes(votes[key], self.builder_config.label_rule)
        if column is None:
          self.report.exclude(split, reason)
          left_out[key] = reason
        else:
          entries.append(common.entry(key, _load, key, image, votes[key], column))
    return entries

  def _pair_repeated(self, split: str, key: str, kept: _Image, votes: list[int],
                     kept_row: tuple[int, list[int]]) -> _Image | None:
    """The image that label.csv's votes for a name repeated in fer2013new.csv belong to.

    label.csv has one line per name, but the name labels two fer2013new.csv rows
    (two different images). Its votes are matched to the row whose own
    fer2013new.csv votes are nearest (L1); the later row (the official
    generator's image on disk) is kept on a tie or when only its PNG exists.
    The pairing is noted in the build report.
    """
    rows = self._earlier[split][key] + [kept_row]
    distances = [sum(abs(a - b) for a, b in zip(votes, row_votes)) for _, row_votes in rows]
    nearest = [row for (row, _), d in zip(rows, distances) if d == min(distances)]
    listed = ", ".join(f"row {row} {row_votes}" for row, row_votes in rows)
    prefix = f"{key} occurs in fer2013new.csv {listed}; label.csv votes {votes}"
    if len(nearest) > 1 or nearest[0] == kept_row[0]:
      why = "are nearest to it" if len(nearest) == 1 else "match no row better"
      self.report.notes.append(f"{prefix} {why}: paired with row {kept_row[0]}'s image")
      return kept
    if not self._pixels:
      self.report.notes.append(
          f"{prefix} belong to row {nearest[0]}, but only row {kept_row[0]}'s image exists "
          f"in the PNG folders: paired with it, as the official code does")
      return kept
    self.report.notes.append(f"{prefix} belong to row {nearest[0]}: paired with row "
                             f"{nearest[0]}'s image, not the later row {kept_row[0]}")
    return self._csv_image(split, key, nearest[0])
