r"""Exports a trained run's model for serving without ferjax.

  python -m ferjax.export --workdir=/tmp/ferjax_quickstart --format=stablehlo --out=/tmp/export
  python -m ferjax.export --workdir=RUN --format=savedmodel --out=DIR [--checkpoint=best]

Formats: `stablehlo` (`jax.export`, symbolic batch), `savedmodel` (TF via
jax2tf), `onnx` (jax2onnx; it does not convert ferjax's models yet, see
docs/inference.md). Each writes `signature.json` (input shape, dtype and range,
outputs, class names). Mistakes print `ferjax: error: ...` and exit with status 2.
"""

import sys

from absl import app, flags, logging

from ferjax import cli, errors

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The ferjax run (its config.json and checkpoints/).")
flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a saved step number.")
flags.DEFINE_bool("ema", False, "Export the run's weight moving average (config.ema.decay > 0).")
flags.DEFINE_enum("format", "stablehlo", ["stablehlo", "savedmodel", "onnx"], "Export format.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_list("platforms", ["cpu"], "stablehlo: platforms to lower for (cpu, cuda, tpu).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from ferjax.inference import export  # pylint: disable=g-import-not-at-top  # heavy imports
  from ferjax.inference.predictor import Predictor  # pylint: disable=g-import-not-at-top
  try:
    predictor = Predictor.from_workdir(FLAGS.workdir, FLAGS.checkpoint, ema=FLAGS.ema)
    signature = export.export(predictor, FLAGS.format, FLAGS.out, platforms=FLAGS.platforms)
  except errors.UserError as e:
    logging.flush()
    errors.exit_with(e)
  except OSError as e:
    errors.exit_with(f"--out={FLAGS.out} cannot be written: {e.strerror or e}")
  print(f"ferjax: exported {FLAGS.workdir} step {signature['step']} as {FLAGS.format} to "
        f"{FLAGS.out} ({', '.join(signature['files'])} + signature.json)")


def run() -> None:
  """Console entry point `ferjax-export`."""
  cli.run(main, sys.modules[__name__], errors.parse_flags)


if __name__ == "__main__":
  run()
