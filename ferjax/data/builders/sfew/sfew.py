"""SFEW 2.0 (Dhall et al., 2011/2015): aligned faces from movie frames, 7 classes.

docs/datasets.md, 'SFEW 2.0'. Labels come only from the emotion folder name.
train = Train/Train_Aligned_Faces, validation = Val/Val_Aligned_Faces (the
evaluation split; test labels are not public). Records are written in
(emotion folder, file name) order.
"""

import pathlib

import tensorflow_datasets as tfds

from ferjax.data import features
from ferjax.data.builders import common

SPLIT_DIRS = {"train": ("Train/Train_Aligned_Faces",),
              "validation": ("Val/Val_Aligned_Faces", "Val/Val_Aligned_Faces_new")}


def _load(path: pathlib.Path, key: str, emotion: str, label: int) -> dict:
  return {"image": common.read_image(path), "label": label, "native_label": emotion,
          "id": key}


class Sfew(common.ManualBuilder):
  """SFEW 2.0 aligned faces, 7 classes, train and validation."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  In manual_dir (or one folder deeper):
    <manual_dir>/Train/Train_Aligned_Faces/<Emotion>/*.png
    <manual_dir>/Val/Val_Aligned_Faces/<Emotion>/*.png   (or Val/Val_Aligned_Faces_new/)
  Emotion folders: Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise.
  Test/ is not read (its labels are not public).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info({
        "image": features.encoded_image(),
        "label": features.canonical_label(7),
        "native_label": tfds.features.Text(),
        "id": tfds.features.Text(),
    }, homepage="https://cs.anu.edu.au/few/AFEW.html")

  def _entries(self, manual_dir: pathlib.Path) -> dict[str, list[common.Entry]]:
    root = common.find_root(manual_dir, SPLIT_DIRS["train"][0])
    splits = {}
    for split, candidates in SPLIT_DIRS.items():
      split_dir = next((root / c for c in candidates if (root / c).is_dir()), None)
      if split_dir is None:
        raise common.LayoutError(f"expected {root / candidates[0]}/<Emotion>/*.png; "
                                 "see docs/datasets.md")
      splits[split] = []
      for folder in sorted(p for p in split_dir.iterdir() if not p.name.startswith(".")):
        label = common.emotion_word_id(folder.name) if folder.is_dir() else None
        if label is None or label > 6:
          self.report.skip(split, folder.name, f"not an emotion folder: {folder}")
          continue
        for path in common.sorted_files(folder):
          key = f"{folder.name}/{path.stem}"
          splits[split].append(common.entry(key, _load, path, key, folder.name, label))
    return splits
