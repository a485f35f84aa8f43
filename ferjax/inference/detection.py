"""Face detection on uint8 RGB images `[H, W, 3]`, with detectors whose weights ship in wheels.

Two detectors were measured (docs/inference.md, "Choosing the detector"):
  * `mtcnn` (the `mtcnn` wheel, TensorFlow): boxes, a confidence and five
    landmarks (eyes, nose, mouth corners) used for eye alignment. The default.
  * `lbp`: scikit-image's shipped OpenCV LBP frontal-face cascade. Boxes only
    (no landmarks, no score), frontal faces only; faster on large images.
Faces come back sorted by decreasing score (then area), so `max_faces` keeps
the most confident ones.
"""

import dataclasses
import os

import numpy as np

DETECTORS = ("mtcnn", "lbp")
# MTCNN's five points, in the wheel's order.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclasses.dataclass(frozen=True)
class Face:
  """One detected face: `box` (x0, y0, x1, y1) in pixels, `score`, `landmarks` `[5, 2]` (x, y)."""
  box: tuple[float, float, float, float]
  score: float
  landmarks: np.ndarray | None = None

  def to_json(self) -> dict:
    result = {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4)}
    if self.landmarks is not None:
      result["landmarks"] = {name: [round(float(x), 2), round(float(y), 2)]
                             for name, (x, y) in zip(LANDMARK_NAMES, self.landmarks)}
    return result


def _sorted(faces: list[Face], max_faces: int) -> list[Face]:
  def area(face: Face) -> float:
    return (face.box[2] - face.box[0]) * (face.box[3] - face.box[1])
  faces = sorted(faces, key=lambda f: (-f.score, -area(f)))
  return faces[:max_faces] if max_faces > 0 else faces


class MTCNNDetector:
  """The `mtcnn` wheel's three-stage cascade (TensorFlow, CPU unless `device` says otherwise)."""

  def __init__(self, *, min_face_size: int = 20, threshold: float = 0.9,
               device: str = "CPU:0"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mtcnn import MTCNN  # pylint: disable=g-import-not-at-top  # pulls in TensorFlow
    self._mtcnn = MTCNN(device=device)
    self.min_face_size = min_face_size
    self.threshold = threshold

  def __call__(self, image: np.ndarray, max_faces: int = 0) -> list[Face]:
    """uint8 `[H, W, 3]` RGB -> faces with boxes, scores and landmarks."""
    found = self._mtcnn.detect_faces(np.ascontiguousarray(image),
                                     min_face_size=self.min_face_size,
                                     threshold_onet=self.threshold)
    faces = []
    for item in found:
      x, y, w, h = item["box"]
      points = np.asarray([item["keypoints"][name] for name in LANDMARK_NAMES], np.float32)
      faces.append(Face((float(x), float(y), float(x + w), float(y + h)),
                        float(item["confidence"]), points))
    return _sorted(faces, max_faces)


class LBPDetector:
  """scikit-image's LBP frontal-face cascade; every detection scores 1 (the cascade has none)."""

  def __init__(self, *, min_face_size: int = 24, scale_factor: float = 1.2,
               step_ratio: float = 1.0, min_neighbors: int = 4):
    from skimage import data, feature  # pylint: disable=g-import-not-at-top
    self._cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())
    self.min_face_size = max(min_face_size, 24)  # the cascade's window is 24x24
    self.scale_factor = scale_factor
    self.step_ratio = step_ratio
    self.min_neighbors = min_neighbors

  def __call__(self, image: np.ndarray, max_faces: int = 0) -> list[Face]:
    """uint8 `[H, W, 3]` RGB -> face boxes (no landmarks)."""
    side = min(image.shape[:2])
    found = self._cascade.detect_multi_scale(
        img=image, scale_factor=self.scale_factor, step_ratio=self.step_ratio,
        min_size=(self.min_face_size, self.min_face_size), max_size=(side, side),
        min_neighbor_number=self.min_neighbors)
    faces = [Face((float(d["c"]), float(d["r"]), float(d["c"] + d["width"]),
                   float(d["r"] + d["height"])), 1.0) for d in found]
    return _sorted(faces, max_faces)


def make_detector(name: str, *, min_face_size: int = 20):
  """`mtcnn` | `lbp` -> a callable `(image uint8 [H, W, 3], max_faces) -> list[Face]`."""
  if name == "mtcnn":
    return MTCNNDetector(min_face_size=min_face_size)
  if name == "lbp":
    return LBPDetector(min_face_size=min_face_size)
  raise ValueError(f"--detector must be one of {', '.join(DETECTORS)}, got {name!r}")
