"""`synthetic_fer`: ferjax's procedural FER dataset (images and clips).

Generated locally by `ferjax.data.synthetic` (no download). Records are
written in index order (record position = example index, `id` =
`{split}_{index:06d}`); the bytes are a function of the config's seed only.
See docs/synthetic.md for the features and knobs.
"""

import os
import sys

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import features
from ferjax.data.synthetic import config as config_lib
from ferjax.data.synthetic import generate, render

SyntheticFerConfig = config_lib.SyntheticFerConfig
# Below this many rendered frames per split, worker start-up costs more than it saves.
_MIN_FRAMES_FOR_WORKERS = 4000


def _scalar(dtype) -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=(), dtype=dtype)


class SyntheticFer(tfds.core.GeneratorBasedBuilder):
  """Synthetic faces with expressions, head pose, blends, label noise and clips."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = list(config_lib.CONFIGS.values())
  DEFAULT_CONFIG_NAME = "images"

  def __init__(self, *, num_workers: int | None = None, **kwargs):
    """Args: num_workers: generator processes (spawned, so a script that builds
    with workers needs an `if __name__ == "__main__":` guard); None: up to 8
    (CPU count) for large splits, none for small ones."""
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self._num_workers = num_workers

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    common = {
        "label": features.canonical_label(cfg.num_classes),
        "clean_label": features.canonical_label(cfg.num_classes),
        "native_label": _scalar(np.int64),
        "soft_label": tfds.features.Tensor(shape=(cfg.num_classes,), dtype=np.float32),
        "intensity": _scalar(np.float32),
        "identity": _scalar(np.int64),
        "occluded": tfds.features.ClassLabel(names=list(render.OCCLUDER_NAMES)),
        "yaw": _scalar(np.float32),
        "pitch": _scalar(np.float32),
        "roll": _scalar(np.float32),
        "id": tfds.features.Text(),
    }
    if cfg.kind == "images":
      specific = {"image": features.encoded_image()}
      supervised = ("image", "label")
    else:
      specific = {"frames": features.encoded_frames(), "num_frames": _scalar(np.int64),
                  "apex_start": _scalar(np.int64), "apex_end": _scalar(np.int64),
                  "windowed": _scalar(np.bool_)}
      supervised = ("frames", "label")
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({**specific, **common}),
        supervised_keys=supervised, disable_shuffling=True)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in generate.SPLITS}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    workers = self._num_workers
    if workers is None:
      frames = generate.num_examples(cfg, split) * (cfg.num_frames if cfg.kind == "clips" else 1)
      big = frames >= _MIN_FRAMES_FOR_WORKERS
      workers = min(8, os.cpu_count() or 1) if big and _can_spawn() else 0
    yield from generate.generate(cfg, split, num_workers=workers)


def _can_spawn() -> bool:
  """Whether spawned workers can re-import `__main__` (not stdin or a REPL file)."""
  path = getattr(sys.modules["__main__"], "__file__", None)
  return path is None or os.path.isfile(path)
