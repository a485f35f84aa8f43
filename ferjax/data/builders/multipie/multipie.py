"""CMU Multi-PIE (Gross et al., 2010): expressions across poses, native 6 classes.

docs/datasets.md, 'CMU Multi-PIE', and docs/methods/stse.md. The label space is Multi-PIE's own
(0 neutral, 1 smile, 2 surprise, 3 squint, 4 disgust, 5 scream), from the
(session, recording) of each image; `canonical_label` gives the ferjax id where
one exists (-1 for squint and scream). Default protocol (config pose7): the 7
head-height cameras at yaw 0/±15/±30/±45, every illumination, the subjects
recorded in all 4 sessions; pose13 keeps all 13 head-height cameras. Every image
is stored once, in split `all_folds`, with `test_fold` = (index of its subject
among the sorted eligible subjects mod 5) + 1. Records are written in (subject,
session, recording, camera, file name) order.
"""

import dataclasses
import os
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import features
from ferjax.data.builders import common
from ferjax.data.builders import folds

CLASS_NAMES = ("neutral", "smile", "surprise", "squint", "disgust", "scream")
# Native id -> canonical id (-1: no canonical class).
TO_CANONICAL = (0, 1, 3, -1, 5, -1)
EXPRESSIONS = {(1, 1): 0, (1, 2): 1, (2, 1): 0, (2, 2): 2, (2, 3): 3, (3, 1): 0,
               (3, 2): 1, (3, 3): 4, (4, 1): 0, (4, 2): 0, (4, 3): 5}
# Head-height cameras from yaw -90 to +90 degrees in 15 degree steps.
CAMERAS = ("11_0", "12_0", "09_0", "08_0", "13_0", "14_0", "05_1", "05_0", "04_1", "19_0",
           "20_0", "01_0", "24_0")
NUM_SESSIONS = 4
DATA_DIR = "data"
_FILE = re.compile(r"(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.\w+")


def camera_yaw(camera: str) -> int:
  """Yaw in degrees of a head-height camera ('05_1' -> 0, '11_0' -> -90)."""
  return -90 + 15 * CAMERAS.index(camera)


@dataclasses.dataclass(eq=False)
class MultipieConfig(tfds.core.BuilderConfig):
  """The cameras (poses) a protocol keeps."""
  cameras: tuple[str, ...] = ()


def _load(path: pathlib.Path, key: str, native: int, subject: int, session: int,
          recording: int, camera: str, illumination: int, test_fold: int) -> dict:
  return {"image": common.read_image(path), "label": native, "native_label": native,
          "canonical_label": TO_CANONICAL[native], "id": key, "subject": subject,
          "session": session, "recording": recording, "camera": camera,
          "yaw": camera_yaw(camera), "illumination": illumination, "test_fold": test_fold}


def _subdirs(folder: pathlib.Path) -> list[str]:
  return sorted(n for n in os.listdir(folder) if (folder / n).is_dir() and n[0] != ".")


class Multipie(common.ManualBuilder):
  """Multi-PIE multiview images, 6 native expression classes, subject-disjoint folds."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      MultipieConfig(name="pose7", cameras=CAMERAS[3:10],
                     description="7 poses: yaw 0, ±15, ±30, ±45"),
      MultipieConfig(name="pose13", cameras=CAMERAS,
                     description="13 poses: yaw -90..90 in 15 degree steps"),
  ]
  DEFAULT_CONFIG_NAME = "pose7"
  EXAMPLES_PER_SHARD = 1000  # 640x480 PNGs
  INDEX_FEATURES = ("label", "test_fold")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  In manual_dir (or its Multi-Pie/ folder):
    <manual_dir>/Multi-Pie/data/session0{1..4}/multiview/<subject>/<recording>/<camera XX_Y>/
        <subject>_<session>_<recording>_<camera XXY>_<illumination>.png
  Face crops are not part of the distribution: to use your own crops, mirror the
  same tree (any image suffix) under a folder and pass `cropped_dir=PATH`
  (prepare: --cropped_dir); images are then read from there.
  """

  def __init__(self, *, cropped_dir: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self._cropped_dir = cropped_dir

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info({
        "image": features.encoded_image(),
        "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
        "native_label": common.scalar(np.int32),
        "canonical_label": common.scalar(np.int32),
        "id": tfds.features.Text(),
        "subject": common.scalar(np.int32),
        "session": common.scalar(np.int32),
        "recording": common.scalar(np.int32),
        "camera": tfds.features.Text(),
        "yaw": common.scalar(np.int32),
        "illumination": common.scalar(np.int32),
        "test_fold": common.scalar(np.int32),
    }, homepage="https://www.cs.cmu.edu/afs/cs/project/PIE/MultiPie/Multi-Pie/Home.html")

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    image_root = pathlib.Path(self._cropped_dir) if self._cropped_dir else manual_dir
    data = common.find_root(image_root, f"{DATA_DIR}/session01/multiview") / DATA_DIR
    sessions = {}
    for s in range(1, NUM_SESSIONS + 1):
      multiview = common.require(data / f"session{s:02d}" / "multiview")
      sessions[s] = set(_subdirs(multiview))
    attended = set().union(*sessions.values())
    eligible = sorted(set.intersection(*sessions.values()), key=int)
    if len(eligible) < len(attended):
      self.report.notes.append(f"{len(attended) - len(eligible)} subject(s) not recorded in "
                               "all 4 sessions left out")
    entries = []
    for index, subject in enumerate(eligible):
      for session in range(1, NUM_SESSIONS + 1):
        entries += self._subject_entries(data / f"session{session:02d}" / "multiview" / subject,
                                         session, index % folds.NUM_FOLDS + 1)
    return {folds.SPLIT: entries}

  def _subject_entries(self, folder: pathlib.Path, session: int,
                       test_fold: int) -> list[common.Entry]:
    entries = []
    cameras = self.builder_config.cameras
    for recording in _subdirs(folder):
      native = EXPRESSIONS.get((session, int(recording))) if recording.isdigit() else None
      if native is None:
        self.report.skip(folds.SPLIT, str(folder / recording),
                         f"no expression for session {session} recording {recording}")
        continue
      for camera in _subdirs(folder / recording):
        camera_dir = folder / recording / camera
        if camera not in cameras:
          self.report.exclude(folds.SPLIT, f"camera {camera} not in {self.builder_config.name}",
                              len(common.sorted_files(camera_dir)))
          continue
        entries += self._camera_entries(camera_dir, folder.name, session, recording, camera,
                                        native, test_fold)
    return entries

  def _camera_entries(self, camera_dir: pathlib.Path, subject: str, session: int,
                      recording: str, camera: str, native: int,
                      test_fold: int) -> list[common.Entry]:
    entries = []
    expected = (subject, f"{session:02d}", recording, camera.replace("_", ""))
    for path in common.sorted_files(camera_dir):
      match = _FILE.fullmatch(path.name)
      if match is None or match.groups()[:4] != expected:
        self.report.skip(folds.SPLIT, str(path), "file name does not match "
                         "<subject>_<session>_<recording>_<camera>_<illum> of its folders")
        continue
      entries.append(common.entry(path.stem, _load, path, path.stem, native, int(subject),
                                  session, int(recording), camera, int(match[5]), test_fold))
    return entries
