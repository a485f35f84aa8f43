r"""Trains or evaluates a ferjax config.

  python -m ferjax.main --config=configs/resnet.py:synthetic --workdir=/tmp/run
  python -m ferjax.main --config=configs/lstpnet.py:fold=2 --workdir=DIR \
      --config.batch_size=32
  python -m ferjax.main --config=... --workdir=DIR --config.eval_only=True

Rerunning the same command resumes from the latest checkpoint in the workdir.
Mistakes in the command, config or data print one line and exit with status 2.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ferjax import distributed, errors, paths, run_config

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with :ARG.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = FLAGS.config
    run_config.validate(config)
    workdir = paths.absolute(FLAGS.workdir, "--workdir")
    if config.eval_only:
      run_config.check_evaluable(config, workdir)
    else:
      run_config.check_resumable(config, workdir)
    distributed.initialize_from_flags()
    # Imported after the checks: ferjax.train pulls in TensorFlow (seconds).
    from ferjax import train  # pylint: disable=g-import-not-at-top
    if config.eval_only:
      train.evaluate(config, workdir)
    else:
      train.train_and_evaluate(config, workdir)
  except errors.UserError as e:
    logging.flush()
    errors.exit_with(e)
  except errors.Preempted as e:
    print(f"ferjax: {e}", file=sys.stderr)
    sys.exit(143)


def run():
  """Console entry point."""
  app.run(main, flags_parser=errors.parse_flags)


if __name__ == "__main__":
  run()
