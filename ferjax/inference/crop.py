"""Face crops framed as the training data frames faces.

A crop is the square of side (1 + 2 margin) * max(box width, box height)
centred at the box centre moved down by `shift` box sides, optionally rotated
about that centre so that the eyes (detector landmarks) are level ("align"),
sampled bilinearly at the source resolution; parts outside the image are
black. The run's eval transform then resizes it as it resizes dataset images.

`CROP_STYLES` gives the framing per dataset (docs/inference.md lists where each
number comes from): `synthetic_fer` is measured on its own test images
(`python -m ferjax.inference.benchmark crop`, which measures any prepared
dataset the same way); the real datasets' values follow their published crops.
"""

import dataclasses
import math

import numpy as np
from PIL import Image

from ferjax.inference.detection import Face


@dataclasses.dataclass(frozen=True)
class CropStyle:
  """`margin`: added per side, in box sides; `shift`: centre moved down, in box sides."""
  margin: float
  align: bool
  shift: float = 0.0


CROP_STYLES: dict[str, CropStyle] = {
    # Measured: MTCNN boxes on the 64x64 renders span 1/1.255 of the image, centred
    # 0.064 box sides above the image centre (median over detected test images).
    "synthetic_fer": CropStyle(margin=0.128, align=False, shift=0.064),
    # RAF-DB "aligned" 100x100: eye-levelled, tight around the face.
    "rafdb": CropStyle(margin=0.1, align=True),
    # AffectNet CSV release: the annotated face box itself (crop_margin 0), not levelled.
    "affectnet": CropStyle(margin=0.0, align=False),
    # FER2013/FERPlus 48x48: tight, not levelled.
    "ferplus": CropStyle(margin=0.05, align=False),
    # SFEW aligned faces, DFEW/FERV39k/AFEW face-cropped frames: levelled, some context.
    "sfew": CropStyle(margin=0.15, align=True),
    "dfew": CropStyle(margin=0.15, align=True),
    "ferv39k": CropStyle(margin=0.15, align=True),
    "afew": CropStyle(margin=0.15, align=True),
}
DEFAULT_STYLE = CropStyle(margin=0.15, align=True)


def style_for(dataset_name: str) -> CropStyle:
  """The crop style of a TFDS dataset name (`name[/config][:version]`)."""
  family = dataset_name.split(":")[0].split("/")[0]
  return CROP_STYLES.get(family, DEFAULT_STYLE)


def eye_angle(face: Face) -> float:
  """Roll of the face in radians: the angle of the left-eye -> right-eye line (0 if unknown)."""
  if face.landmarks is None:
    return 0.0
  (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
  return math.atan2(ry - ly, rx - lx)


def crop_face(image: np.ndarray, face: Face, style: CropStyle) -> np.ndarray:
  """uint8 `[H, W, 3]` image -> uint8 `[n, n, 3]` crop of `face` (n = the crop side in pixels)."""
  x0, y0, x1, y1 = face.box
  box_side = max(x1 - x0, y1 - y0, 1.0)
  side = box_side * (1 + 2 * style.margin)
  n = max(int(round(side)), 1)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + style.shift * box_side
  angle = eye_angle(face) if style.align else 0.0
  cos, sin = math.cos(angle), math.sin(angle)
  scale = side / n
  # Output pixel (u, v) samples source point centre + R(angle) @ ((u, v) - n/2) * scale:
  # PIL's affine maps output to input coordinates (a, b, c, d, e, f).
  half = n / 2
  a, b = cos * scale, -sin * scale
  d, e = sin * scale, cos * scale
  c = cx - a * half - b * half
  f = cy - d * half - e * half
  return np.asarray(Image.fromarray(image).transform(
      (n, n), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR, fillcolor=(0, 0, 0)))
