"""What `python -m ferjax.predict` does with its flags and inputs (see ferjax/predict.py)."""

import dataclasses
import sys

from ferjax import errors
from ferjax.inference import crop, detection, media, output, process
from ferjax.inference.predictor import Predictor


@dataclasses.dataclass
class Settings:
  """The flags of `ferjax.predict` (same names and defaults)."""
  workdir: str
  checkpoint: str = "latest"
  ema: bool = False
  out: str | None = None
  annotate: str | None = None
  no_detect: bool = False
  detector: str = "mtcnn"
  max_faces: int = 0
  min_face_size: int = 20
  margin: float | None = None
  align: str = "auto"
  stride: int = 0
  window: int = 0
  batch_size: int = 32


def _style(dataset_name: str, margin: float | None, align: str) -> crop.CropStyle:
  style = crop.style_for(dataset_name)
  if margin is not None:
    if margin < 0:
      raise errors.UserError(f"--margin must be >= 0, got {margin}")
    style = dataclasses.replace(style, margin=margin)
  if align != "auto":
    style = dataclasses.replace(style, align=align == "yes")
  return style


def run(inputs: list[str], flags: Settings) -> int:
  """Predicts every input; returns the exit status (0: all read, 2: some could not be read).

  Raises:
    UserError: bad settings, workdir or checkpoint (nothing was processed).
  """
  for name in ("max_faces", "stride", "window", "min_face_size"):
    if getattr(flags, name) < 0:
      raise errors.UserError(f"--{name} must be >= 0, got {getattr(flags, name)}")
  if flags.batch_size < 1:
    raise errors.UserError(f"--batch_size must be >= 1, got {flags.batch_size}")
  predictor = Predictor.from_workdir(flags.workdir, flags.checkpoint, batch_size=flags.batch_size,
                                     ema=flags.ema)
  detector = (None if flags.no_detect else
              detection.make_detector(flags.detector, min_face_size=flags.min_face_size))
  options = process.Options(
      detector=detector, style=_style(predictor.config.dataset.name, flags.margin, flags.align),
      max_faces=flags.max_faces, stride=flags.stride, window=flags.window,
      annotate_dir=flags.annotate)
  files, missing = media.expand_inputs(inputs)
  runner = process.FilePredictor(predictor, options)
  try:
    writer = output.RecordWriter(flags.out, predictor.class_names)
  except OSError as e:
    raise errors.UserError(f"--out={flags.out} cannot be written: {e.strerror or e}") from None
  failed = [f"{pattern}: {reason}" for pattern, reason in missing]
  for line in failed:
    print(f"ferjax: error: {line}", file=sys.stderr)
  read, faces, faceless = 0, 0, []

  def report(path: str, result) -> None:
    nonlocal read, faces
    if isinstance(result, media.BadInput):
      failed.append(path)
      print(f"ferjax: error: {path}: {result}", file=sys.stderr)
      return
    read += 1
    faces += len(result)
    if not result:
      faceless.append(path)
      print(f"ferjax: warning: {path}: no face found", file=sys.stderr)
    for record in result:
      writer.write(record)

  try:
    images = [f for f in files if not media.is_video(f)]
    for path, result in runner.images(images):
      report(path, result)
    for path in (f for f in files if media.is_video(f)):
      try:
        result = runner.video(path)
      except media.BadInput as e:
        result = e
      report(path, result)
  finally:
    writer.close()
  total = len(files) + len(missing)
  print(f"ferjax: {total} input(s): {read} read ({faces} face(s), {len(faceless)} without a "
        f"face), {len(failed)} could not be read", file=sys.stderr)
  return 2 if failed else 0
