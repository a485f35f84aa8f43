"""BU-3DFE (Yin et al., FG 2006) multi-view renderings for pose-invariant FER.

docs/datasets.md, 'BU-3DFE', and docs/methods/stse.md. The dataset ships 3-D scans; the
user renders 2-D views and lists them in <manual_dir>/index.csv
(`path,subject,expression,intensity,yaw,pitch`). Configs p1 (yaw 0/30/45/60/90,
pitch 0) and p2 (yaw 0/±15/±30/±45 x pitch 0/±15/±30) keep their views, all
intensities, and exclude neutral (6 classes in canonical ids). Every image is
stored once, in split `all_folds`, with `test_fold` = (index of its subject
among the sorted subject ids mod 5) + 1. Records follow index.csv's row order.
"""

import csv
import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import features
from ferjax.data.builders import common
from ferjax.data.builders import folds

INDEX = "index.csv"
COLUMNS = ("path", "subject", "expression", "intensity", "yaw", "pitch")
CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral",
         "SA": "sad", "SU": "surprise"}
TO_CANONICAL = dict(zip(CODES, common.canonical_ids(tuple(CODES.values()))))


@dataclasses.dataclass(eq=False)
class Bu3dfeConfig(tfds.core.BuilderConfig):
  """The rendered views (yaw x pitch, degrees) a protocol keeps."""
  yaws: tuple[int, ...] = ()
  pitches: tuple[int, ...] = (0,)


def _load(path: pathlib.Path, key: str, row: dict, test_fold: int) -> dict:
  return {"image": common.read_image(path), "label": TO_CANONICAL[row["expression"]],
          "native_label": row["expression"], "id": key, "subject": row["subject"],
          "intensity": row["intensity"], "yaw": row["yaw"], "pitch": row["pitch"],
          "test_fold": test_fold}


class Bu3dfe(common.ManualBuilder):
  """BU-3DFE rendered views, 6 expressions (canonical ids), subject-disjoint folds."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      Bu3dfeConfig(name="p1", yaws=(0, 30, 45, 60, 90), pitches=(0,),
                   description="Setting I: 5 yaw views"),
      Bu3dfeConfig(name="p2", yaws=(-45, -30, -15, 0, 15, 30, 45),
                   pitches=(-30, -15, 0, 15, 30), description="Setting II: 35 views"),
  ]
  DEFAULT_CONFIG_NAME = "p1"
  INDEX_FEATURES = ("label", "test_fold")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Render the 2-D views yourself (BU-3DFE ships 3-D scans), then:
    <manual_dir>/index.csv   header path,subject,expression,intensity,yaw,pitch
    <manual_dir>/<path>      every rendered image (path relative to manual_dir)
  expression is one of AN DI FE HA NE SA SU; intensity 0-4; yaw and pitch are
  integers in degrees.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info({
        "image": features.encoded_image(),
        "label": features.canonical_label(7),
        "native_label": tfds.features.Text(),
        "id": tfds.features.Text(),
        "subject": tfds.features.Text(),
        "intensity": common.scalar(np.int32),
        "yaw": common.scalar(np.int32),
        "pitch": common.scalar(np.int32),
        "test_fold": common.scalar(np.int32),
    }, homepage="https://www.cs.binghamton.edu/~lijun/Research/3DFE/3DFE_Analysis.html")

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    root = common.find_root(manual_dir, INDEX)
    rows = self._read_index(root / INDEX)
    subjects = sorted({row["subject"] for row in rows})
    fold_of = {s: i % folds.NUM_FOLDS + 1 for i, s in enumerate(subjects)}
    config = self.builder_config
    entries = []
    for row in rows:
      if row["expression"] == "NE":
        self.report.exclude(folds.SPLIT, "neutral (NE) is not in the protocol")
      elif row["yaw"] not in config.yaws or row["pitch"] not in config.pitches:
        self.report.exclude(folds.SPLIT, f"view (yaw, pitch) not in {config.name}")
      else:
        key = str(pathlib.PurePath(row["path"]).with_suffix(""))
        entries.append(common.entry(key, _load, root / row["path"], key, row,
                                    fold_of[row["subject"]]))
    return {folds.SPLIT: entries}

  def _read_index(self, path: pathlib.Path) -> list[dict]:
    """The well-formed index.csv rows, parsed; malformed rows go to the report."""
    rows = []
    with common.open_text(path) as lines:
      reader = csv.DictReader(lines)
      missing = set(COLUMNS) - set(reader.fieldnames or ())
      if missing:
        raise common.AnnotationError(f"{path}: no column(s) {', '.join(sorted(missing))}; "
                                     f"the header must be {','.join(COLUMNS)}")
      for raw in reader:
        where = f"{path.name}:{reader.line_num}"
        try:
          if None in raw.values():  # csv.DictReader's filler for a short row
            raise ValueError(f"fewer fields than the header's {len(reader.fieldnames)}")
          row = {"path": raw["path"].strip(), "subject": raw["subject"].strip(),
                 "expression": raw["expression"].strip().upper(),
                 **{k: int(raw[k]) for k in ("intensity", "yaw", "pitch")}}
          if row["expression"] not in CODES:
            raise ValueError(f"unknown expression {raw['expression']!r}")
          if not 0 <= row["intensity"] <= 4 or not row["path"] or not row["subject"]:
            raise ValueError("intensity outside 0..4 or empty path/subject")
        except (TypeError, ValueError) as e:
          self.report.skip(folds.SPLIT, where, f"malformed row ({e}): {raw}")
          continue
        rows.append(row)
    return rows
