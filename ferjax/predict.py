r"""Predicts facial expressions in photos and videos with a trained ferjax run.

  python -m ferjax.predict --workdir=/tmp/ferjax_quickstart photo.jpg folder/ 'clips/*.mp4'
  python -m ferjax.predict --workdir=RUN --out=faces.csv --annotate=out/ video.mp4
  python -m ferjax.predict --workdir=RUN --no_detect crops/     # inputs are face crops

One JSON line per face goes to stdout (or --out=FILE.jsonl|.csv); the schema is
in docs/inference.md. An input that cannot be read is reported on stderr as
`ferjax: error: FILE: reason` and the others are still processed; inputs
without a face get a `ferjax: warning:` line. A summary line ends the run.
Exit status: 0 when every input was read; 2 when any input could not be read,
or when nothing could run (bad flags, workdir, checkpoint).
"""

import dataclasses
import sys

from absl import app, flags, logging

from ferjax import cli, errors

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The ferjax run (its config.json and checkpoints/).")
flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a saved step number.")
flags.DEFINE_bool("ema", False, "Use the run's weight moving average (config.ema.decay > 0).")
flags.DEFINE_string("out", None, "Write records to FILE.jsonl or FILE.csv instead of stdout.")
flags.DEFINE_string("annotate", None, "Write annotated images/videos and video timelines here.")
flags.DEFINE_bool("no_detect", False, "Inputs are face crops already: no detection.")
flags.DEFINE_enum("detector", "mtcnn", ["mtcnn", "lbp"], "Face detector.")
flags.DEFINE_integer("max_faces", 0, "Most confident faces kept per image/frame (0 = all).")
flags.DEFINE_integer("min_face_size", 20, "Smallest face the detector looks for, in pixels.")
flags.DEFINE_float("margin", None, "Crop margin per side in box sides (default: the run's "
                   "dataset, docs/inference.md).")
flags.DEFINE_enum("align", "auto", ["auto", "yes", "no"], "Level the eyes before cropping "
                  "(auto: as the run's dataset).")
flags.DEFINE_integer("stride", 0, "Videos: frames between predictions (image models, default "
                     "1) or between clip windows (clip models, default window/2).")
flags.DEFINE_integer("window", 0, "Clip models: video frames per window (default 2 x the run's "
                     "num_frames), sampled to num_frames as evaluation samples a clip.")
flags.DEFINE_integer("batch_size", 32, "Faces (or clips) per model call.")
flags.mark_flag_as_required("workdir")


def main(argv):
  inputs = argv[1:]
  if not inputs:
    errors.exit_with("no inputs: give image/video files, folders or globs after the flags")
  # pylint: disable-next=g-import-not-at-top  # heavy imports
  from ferjax.inference import cli as predict_cli
  settings = predict_cli.Settings(**{field.name: FLAGS[field.name].value
                                     for field in dataclasses.fields(predict_cli.Settings)})
  try:
    status = predict_cli.run(inputs, settings)
  except errors.UserError as e:
    logging.flush()
    errors.exit_with(e)
  sys.exit(status)


def run() -> None:
  """Console entry point `ferjax-predict`."""
  cli.run(main, sys.modules[__name__], errors.parse_flags)


if __name__ == "__main__":
  run()
