"""Predictions for image and video files: detect, crop, predict, one JSON record per face.

Record (docs/inference.md has the schema): `file`, `frame` and `time` (videos;
null for images), `last_frame`/`end_time` (clip models: the window),
`track` (videos), `face` (rank in its image or frame), `box` [x0, y0, x1, y1]
pixels, `score` (detector confidence, null with --no_detect), `landmarks`
(five named points, or null), `label`, `probabilities` {class: p}, `logits` [K].
"""

import dataclasses
import os
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from ferjax.data import frame_sampling
from ferjax.inference import annotate, crop, media, tracking
from ferjax.inference.detection import Face
from ferjax.inference.predictor import Predictor, softmax


@dataclasses.dataclass
class Options:
  """What the CLI flags choose: detection, framing, video sampling, annotation."""
  detector: object | None            # None: every input is already a face crop (--no_detect)
  style: crop.CropStyle
  max_faces: int = 0                  # 0 = every face found
  stride: int = 0                     # video: frames between predictions (0 = model default)
  window: int = 0                     # clip models: video frames per window (0 = 2 T)
  annotate_dir: str | None = None


class FilePredictor:
  """Runs a `Predictor` over image and video files."""

  def __init__(self, predictor: Predictor, options: Options):
    self.predictor = predictor
    self.options = options
    self.clip_model = predictor.kind == "clip"
    self.window = options.window or 2 * predictor.num_frames
    self.stride = options.stride or (max(self.window // 2, 1) if self.clip_model else 1)
    if options.annotate_dir:
      os.makedirs(options.annotate_dir, exist_ok=True)
    self._names: set[str] = set()

  # -- shared steps -----------------------------------------------------------------------

  def _faces(self, pixels: np.ndarray) -> list[Face]:
    if self.options.detector is None:
      height, width = pixels.shape[:2]
      return [Face((0.0, 0.0, float(width), float(height)), float("nan"))]
    return self.options.detector(pixels, self.options.max_faces)

  def _crops(self, pixels: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
    """Face crops, each through the run's eval transform: uint8 `[S, S, 3]`."""
    if self.options.detector is None:
      return [self.predictor.preprocess_face(pixels)]
    return [self.predictor.preprocess_face(crop.crop_face(pixels, face, self.options.style))
            for face in faces]

  def _still_inputs(self, crops: list[np.ndarray]) -> np.ndarray:
    """Model inputs for faces of a still image: crops, or for clip models a still clip."""
    if not self.clip_model:
      return np.stack(crops)
    return np.stack([self._clip([c]) for c in crops])

  def _clip(self, crops: list[np.ndarray]) -> np.ndarray:
    """`[n]` preprocessed crops -> the model's `[T, S, S, 3]` by eval segment sampling."""
    chosen = frame_sampling.segment_indices(
        len(crops), self.predictor.num_segments,
        self.predictor.num_frames // self.predictor.num_segments, train=False)
    return np.stack([crops[i] for i in chosen])

  def _record(self, path: str, face: Face, rank: int, logits: np.ndarray, **extra) -> dict:
    names = self.predictor.class_names
    probabilities = softmax(logits[None])[0]
    record = {"file": path, "frame": None, "time": None, "track": None, "face": rank,
              **face.to_json(), **extra}
    if self.options.detector is None:
      record["score"] = None
    record.setdefault("landmarks", None)
    record["label"] = names[int(np.argmax(probabilities))]
    record["probabilities"] = {n: round(float(p), 6) for n, p in zip(names, probabilities)}
    record["logits"] = [float(v) for v in logits]
    return record

  def _output_path(self, path: str, suffix: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, k = stem + suffix, 1
    while name in self._names:
      name, k = f"{stem}_{k}{suffix}", k + 1
    self._names.add(name)
    return os.path.join(self.options.annotate_dir, name)

  # -- images -----------------------------------------------------------------------------

  def images(self, paths: list[str]) -> Iterator[tuple[str, list[dict] | media.BadInput]]:
    """(path, its records, or the BadInput) per image file, in order."""
    def read(path: str) -> np.ndarray | media.BadInput:
      try:
        return media.read_image(path)
      except media.BadInput as e:
        return e
    return self.pixels((path, read(path)) for path in paths)

  def pixels(self, items: Iterable[tuple[str, np.ndarray | media.BadInput]]
             ) -> Iterator[tuple[str, list[dict] | media.BadInput]]:
    """(name, records or BadInput) per (name, uint8 `[H, W, 3]` or BadInput), predicting up
    to `batch_size` faces in one model call."""
    batch_size = self.predictor.batch_size
    pending, count = [], 0
    for name, pixels in items:
      if isinstance(pixels, media.BadInput):
        yield from self._flush_images(pending)
        pending, count = [], 0
        yield name, pixels
        continue
      faces = self._faces(pixels)
      crops = self._crops(pixels, faces)
      pending.append((name, pixels, faces, crops))
      count += len(crops)
      if count >= batch_size:
        yield from self._flush_images(pending)
        pending, count = [], 0
    yield from self._flush_images(pending)

  def _flush_images(self, pending) -> Iterator[tuple[str, list[dict]]]:
    crops = [c for _, _, _, cs in pending for c in cs]
    logits = self.predictor.logits(self._still_inputs(crops)) if crops else np.zeros((0, 0))
    start = 0
    for path, pixels, faces, image_crops in pending:
      records = [self._record(path, face, k, logits[start + k])
                 for k, face in enumerate(faces)]
      start += len(image_crops)
      if self.options.annotate_dir:
        annotated = annotate.draw(pixels, records)
        Image.fromarray(annotated).save(self._output_path(path, ".png"))
      yield path, records

  # -- videos -----------------------------------------------------------------------------

  def video(self, path: str) -> list[dict]:
    """Records of one video: per sampled frame (image models) or per window (clip models).

    Raises:
      BadInput: an unreadable video, or one without frames.
    """
    # Image models see every stride-th frame: a track may skip 5 of those.
    tracker = tracking.IoUTracker(max_gap=5 * (1 if self.clip_model else self.stride))
    records: list[dict] = []
    tracks: dict[int, dict[int, tuple]] = {}  # clip models: track -> frame -> (crop, face, time)
    times: dict[int, float] = {}
    num_frames = 0
    for index, time, pixels in media.video_frames(path):
      num_frames += 1
      times[index] = time
      if not self.clip_model and index % self.stride:
        continue
      faces = self._faces(pixels)
      ids = tracker.update(index, [f.box for f in faces])
      crops = self._crops(pixels, faces)
      if self.clip_model:
        for track, face, face_crop in zip(ids, faces, crops):
          tracks.setdefault(track, {})[index] = (face_crop, face, time)
      elif crops:
        logits = self.predictor.logits(np.stack(crops))
        records.extend(self._record(path, face, k, logits[k], frame=index,
                                    time=round(time, 4), track=track)
                       for k, (face, track) in enumerate(zip(faces, ids)))
    if not num_frames:
      raise media.BadInput("video has no frames")
    if self.clip_model:
      records = self._windows(path, tracks, times)
    if self.options.annotate_dir and records:
      self._annotate_video(path, records)
    return records

  def _windows(self, path: str, tracks: dict, times: dict[int, float]) -> list[dict]:
    """Clip-model records: windows of `window` frames every `stride` frames along each track
    (plus one ending at the track's last frame)."""
    inputs, meta = [], []
    for track, frames in sorted(tracks.items()):
      first, last = min(frames), max(frames)
      span = last - first + 1
      length = min(self.window, span)
      starts = list(range(first, last - length + 2, self.stride))
      if starts[-1] + length - 1 < last:  # The track's last frames get a window too.
        starts.append(last - length + 1)
      for start in starts:
        crops, held = [], frames[max(f for f in frames if f <= start)]
        for index in range(start, start + length):
          held = frames.get(index, held)  # a frame the detector missed repeats the last crop
          crops.append(held[0])
        inputs.append(self._clip(crops))
        middle = frames.get(start + length // 2) or held
        meta.append((track, start, start + length - 1, middle[1]))
    if not inputs:
      return []
    logits = self.predictor.logits(np.stack(inputs))
    return [self._record(path, face, 0, z, frame=start, time=round(times[start], 4),
                         last_frame=end, end_time=round(times[end], 4), track=track)
            for (track, start, end, face), z in zip(meta, logits)]

  def _annotate_video(self, path: str, records: list[dict]) -> None:
    """The video with, on each frame, the latest record of each track that covers it; and
    `<stem>_timeline.png`."""
    by_track: dict[int, list[dict]] = {}
    for record in records:
      by_track.setdefault(record["track"], []).append(record)
    span = self.stride if not self.clip_model else None
    frames = []
    for index, _, pixels in media.video_frames(path):
      shown = []
      for rows in by_track.values():
        covering = [r for r in rows if r["frame"] <= index <= (
            r["frame"] + span - 1 if span else r["last_frame"])]
        if covering:
          shown.append(covering[-1])
      frames.append(annotate.draw(pixels, shown))
    media.write_video(self._output_path(path, ".mp4"), frames, media.video_rate(path))
    annotate.plot_timeline(records, self.predictor.class_names,
                           self._output_path(path, "_timeline.png"),
                           title=os.path.basename(path))
