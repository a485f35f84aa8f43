r"""Measurements behind docs/inference.md and docs/benchmarks.md ("Inference").

  python -m ferjax.inference.benchmark detectors              # recall and speed, mtcnn vs lbp
  python -m ferjax.inference.benchmark crop --dataset=synthetic_fer/images
  python -m ferjax.inference.benchmark throughput --workdir=RUN [--clip_workdir=RUN]

`detectors`: on scikit-image's astronaut (one face), the LFW subset it ships
(100 faces, 100 non-faces, 25x25, upsampled 4x to 100x100) and 200 synthetic
test renders (64x64, upsampled 2x): faces found, false positives, ms per image.
`crop`: where MTCNN's box sits in a prepared dataset's images (side ratio and
centre offset), i.e. the margin and shift of a `crop.CropStyle` that reproduces
that dataset's framing. `throughput`: Predictor faces/s at batch 1 and 32,
end to end images/s with detection, video frames/s, and the detection/model split.
"""

import tempfile
import time

import ml_collections
import numpy as np
from absl import app, flags
from PIL import Image

from ferjax.data import augment, pipeline
from ferjax.inference import crop, detection, media, process
from ferjax.inference.predictor import Predictor

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "synthetic_fer/images", "crop/detectors: TFDS dataset of images.")
flags.DEFINE_string("split", "test", "crop/detectors: split to read.")
flags.DEFINE_integer("num_images", 200, "crop/detectors: images read from the split.")
flags.DEFINE_string("workdir", None, "throughput: an image-model run.")
flags.DEFINE_string("clip_workdir", None, "throughput: a clip-model run (video frames/s).")
flags.DEFINE_integer("repeats", 3, "throughput: timed repetitions (the median is reported).")


def _dataset_images(name: str, split: str, count: int) -> list[np.ndarray]:
  config = ml_collections.ConfigDict({"name": name, "data_dir": "", "label_key": "label",
                                      "num_classes": 7, "fold": 0, "min_frames": 0})
  source = pipeline.open_split(config, split, train=False)
  return [np.asarray(augment.decode(source.record(j)[1]["image"]))
          for j in range(min(count, len(source)))]


def _upsample(image: np.ndarray, factor: int) -> np.ndarray:
  height, width = image.shape[:2]
  return np.asarray(Image.fromarray(image).resize((width * factor, height * factor),
                                                  Image.BILINEAR))


def detectors() -> None:
  from skimage import data  # pylint: disable=g-import-not-at-top
  lfw = np.load(f"{data.data_dir}/lfw_subset.npy")
  lfw = [_upsample(np.repeat((255 * face).astype(np.uint8)[..., None], 3, -1), 4) for face in lfw]
  synthetic = [_upsample(image, 2)
               for image in _dataset_images(FLAGS.dataset, FLAGS.split, FLAGS.num_images)]
  astronaut = data.astronaut()
  print("| detector | astronaut faces (1 true) | astronaut ms | LFW faces found / 100 | "
        "LFW non-faces with a detection / 100 | LFW ms/image | synthetic found / "
        f"{len(synthetic)} | synthetic ms/image |")
  print("|---|---|---|---|---|---|---|---|")
  for name in detection.DETECTORS:
    detector = detection.make_detector(name)
    detector(astronaut)  # Warm-up (graph building).
    start = time.perf_counter()
    found = len(detector(astronaut))
    astronaut_ms = 1000 * (time.perf_counter() - start)
    start = time.perf_counter()
    hits = [bool(detector(image)) for image in lfw]
    lfw_ms = 1000 * (time.perf_counter() - start) / len(lfw)
    start = time.perf_counter()
    synthetic_hits = sum(bool(detector(image)) for image in synthetic)
    synthetic_ms = 1000 * (time.perf_counter() - start) / max(len(synthetic), 1)
    print(f"| {name} | {found} | {astronaut_ms:.0f} | {sum(hits[:100])} | {sum(hits[100:])} | "
          f"{lfw_ms:.1f} | {synthetic_hits} | {synthetic_ms:.1f} |")


def crop_framing() -> None:
  detector = detection.make_detector("mtcnn")
  ratios, shifts = [], []
  images = _dataset_images(FLAGS.dataset, FLAGS.split, FLAGS.num_images)
  for image in images:
    faces = detector(_upsample(image, 2), 1)
    if not faces:
      continue
    x0, y0, x1, y1 = np.asarray(faces[0].box) / 2
    side = max(x1 - x0, y1 - y0)
    height, width = image.shape[:2]
    ratios.append(min(height, width) / side)
    shifts.append((height / 2 - (y0 + y1) / 2) / side)
  if not ratios:
    raise app.UsageError(f"MTCNN found no face in {len(images)} images of {FLAGS.dataset}")
  ratio, shift = float(np.median(ratios)), float(np.median(shifts))
  print(f"{FLAGS.dataset}:{FLAGS.split}: faces found in {len(ratios)} of {len(images)} images; "
        f"image side / box side: median {ratio:.3f}; image centre below the box centre by "
        f"{shift:.3f} box sides -> CropStyle(margin={(ratio - 1) / 2:.3f}, shift={shift:.3f})")


def _median_time(fn, repeats: int) -> float:
  fn()  # Warm-up: compilation.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def throughput() -> None:
  from skimage import data  # pylint: disable=g-import-not-at-top
  astronaut = data.astronaut()
  detector = detection.make_detector("mtcnn")
  for batch in (1, 32):
    predictor = Predictor.from_workdir(FLAGS.workdir, batch_size=batch)
    faces = [crop.crop_face(astronaut, detector(astronaut, 1)[0],
                            crop.style_for(predictor.config.dataset.name))] * batch
    inputs = np.stack([predictor.preprocess_face(f) for f in faces])
    model_s = _median_time(lambda: predictor.logits(inputs), FLAGS.repeats)
    prep_s = _median_time(lambda: [predictor.preprocess_face(f) for f in faces], FLAGS.repeats)
    detect_s = _median_time(lambda: detector(astronaut), FLAGS.repeats)
    runner = process.FilePredictor(predictor, process.Options(
        detector=detector, style=crop.style_for(predictor.config.dataset.name)))
    items = [("astronaut", astronaut)] * batch
    end_to_end = lambda: list(runner.pixels(items))  # Detect, crop, one model call.
    total_s = _median_time(end_to_end, FLAGS.repeats)
    print(f"batch {batch}: Predictor {batch / model_s:.1f} faces/s (model only, "
          f"{1000 * model_s / batch:.2f} ms/face), eval preprocessing "
          f"{1000 * prep_s / batch:.2f} ms/face; MTCNN {1000 * detect_s:.0f} ms per 512x512 "
          f"image; end to end {batch / total_s:.2f} images/s ({100 * detect_s * batch / total_s:.0f}"
          "% detection)")
  if FLAGS.clip_workdir:
    predictor = Predictor.from_workdir(FLAGS.clip_workdir)
    frames = [np.asarray(Image.fromarray(astronaut).resize((256, 256)))] * 48
    runner = process.FilePredictor(predictor, process.Options(
        detector=detector, style=crop.style_for(predictor.config.dataset.name)))
    with tempfile.TemporaryDirectory() as tmp:
      path = f"{tmp}/video.mp4"
      media.write_video(path, frames, 25)
      seconds = _median_time(lambda: runner.video(path), 1)
    print(f"clip model ({predictor.config.model.name}, window {runner.window}, stride "
          f"{runner.stride}): {len(frames) / seconds:.2f} video frames/s (256x256, detection "
          "on every frame)")


def main(argv):
  if len(argv) != 2 or argv[1] not in ("detectors", "crop", "throughput"):
    raise app.UsageError("usage: python -m ferjax.inference.benchmark detectors|crop|throughput")
  {"detectors": detectors, "crop": crop_framing, "throughput": throughput}[argv[1]]()


if __name__ == "__main__":
  app.run(main)
