r"""Trains or evaluates a ferjax config.

  python -m ferjax.main --config=configs/resnet.py:synthetic --workdir=/tmp/run
  python -m ferjax.main --config=configs/lstpnet.py:fold=2 --workdir=DIR \
      --config.batch_size=32
  python -m ferjax.main --config=... --workdir=DIR --config.eval_only=True

Rerunning the same command resumes from the latest checkpoint in the workdir.
Libraries' INFO lines (Orbax, TFDS, clu) are shown with --library_logs.
Mistakes in the command, config or data print one line and exit with status 2.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ferjax import distributed, errors, reporting, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with :ARG.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_bool("library_logs", False,
                  "Also show libraries' INFO lines (Orbax, TFDS, clu, Grain).")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  reporting.quiet_libraries(not FLAGS.library_logs)
  try:
    distributed.initialize_from_flags()
    config = FLAGS.config
    if config.eval_only:
      train.evaluate(config, FLAGS.workdir)
    else:
      train.train_and_evaluate(config, FLAGS.workdir)
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
