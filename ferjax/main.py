r"""Trains or evaluates a ferjax config.

  python -m ferjax.main --config=configs/resnet.py:synthetic --workdir=/tmp/run
  python -m ferjax.main --config=lstpnet:fold=2 --workdir=DIR --config.batch_size=32
  python -m ferjax.main --config=... --workdir=DIR --config.eval_only=True

Installed as `ferjax-train`, and as `ferjax-eval` (the same with eval_only).
`--config` takes a config file or a packaged config name (resnet, lstpnet,
msfe, slm_aea, stse_resnet50), each with an optional `:ARG`; every config has
a `:smoke` variant, a CPU check that the method trains.
Rerunning the same command resumes from the latest checkpoint in the workdir.
Mistakes in the command, config or data print one line and exit with status 2;
SIGINT (Ctrl-C) and SIGTERM print one line and exit with 130 and 143.
Libraries' INFO lines (Orbax, TFDS, clu) are shown with --library_logs.
"""

import functools
import sys

from absl import flags, logging

from ferjax import cli, distributed, errors, paths

FLAGS = flags.FLAGS
cli.define_config_flag("Config file or packaged config name, optionally with :ARG.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.DEFINE_bool("library_logs", False,
                  "Also show libraries' INFO lines (Orbax, TFDS, clu, Grain).")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()
flags.adopt_module_key_flags(distributed)


def main(argv: list[str], *, evaluate_only: bool = False) -> None:
  if len(argv) > 1:
    errors.exit_with(f"unexpected arguments: {' '.join(argv[1:])}")
  # The ML stack (JAX, TensorFlow, Orbax) loads inside, not at import: --help stays fast.
  from ferjax import reporting, run_config, stop_signals  # pylint: disable=g-import-not-at-top
  reporting.quiet_libraries(not FLAGS.library_logs)
  try:
    config = FLAGS.config
    evaluate_only = evaluate_only or config.eval_only
    run_config.validate(config)
    workdir = paths.absolute(FLAGS.workdir, "--workdir")
    if evaluate_only:
      run_config.check_evaluable(config, workdir)
    else:
      run_config.check_resumable(config, workdir)
    distributed.initialize_from_flags()
    # Imported after the checks: ferjax.train pulls in TensorFlow (seconds).
    from ferjax import train  # pylint: disable=g-import-not-at-top
    with stop_signals.stop_at_once():
      if evaluate_only:
        train.evaluate(config, workdir)
      else:
        train.train_and_evaluate(config, workdir)
  except errors.UserError as e:
    logging.flush()
    errors.exit_with(e)
  except KeyboardInterrupt:  # Ctrl-C while joining the other processes.
    print("ferjax: stopped by SIGINT", file=sys.stderr)
    sys.exit(130)
  except stop_signals.Interrupted as e:
    logging.flush()
    print(f"ferjax: {e}", file=sys.stderr)
    sys.exit(e.exit_status)
  except errors.Preempted as e:
    print(f"ferjax: {e}", file=sys.stderr)
    sys.exit(143)


def run() -> None:
  """Console entry point `ferjax-train`."""
  cli.run(main, sys.modules[__name__], errors.parse_flags)


def run_eval() -> None:
  """Console entry point `ferjax-eval`: evaluates a workdir, as `--config.eval_only=True`."""
  cli.run(functools.partial(main, evaluate_only=True), sys.modules[__name__],
          errors.parse_flags)


if __name__ == "__main__":
  run()
