"""TFDS feature connectors shared by all ferjax builders.

Images and video frames are stored as the encoded bytes (JPEG/PNG) and decoded
in Grain workers, so that building and reading never needs TensorFlow
(`tfds.features.Image`/`Video` would).
"""

import numpy as np
import tensorflow_datasets as tfds

from ferjax.data import labels


def encoded_image() -> tfds.features.FeatureConnector:
  """One encoded image (JPEG or PNG bytes)."""
  return tfds.features.Tensor(shape=(), dtype=np.object_)


def encoded_frames() -> tfds.features.FeatureConnector:
  """A clip: a variable-length sequence of encoded frames, in temporal order."""
  return tfds.features.Sequence(encoded_image())


def canonical_label(num_classes: int = 8) -> tfds.features.ClassLabel:
  """A label in ferjax's canonical order (labels.CLASS_NAMES_8 prefix)."""
  return tfds.features.ClassLabel(names=list(labels.class_names(num_classes)))
