"""How a run ends early: user mistakes as one line without a traceback, preemption."""

import sys

from absl import flags


class UserError(Exception):
  """A mistake in the command, config or data that the user can fix.

  `ferjax.main` prints it as `ferjax: error: <message>` and exits with status 2.
  """


class Preempted(Exception):
  """Raised after the preemption (SIGTERM) checkpoint is written; rerunning resumes.

  The entry points print it and exit with status 143, as a process killed by SIGTERM.
  """


def exit_with(error: Exception | str) -> None:
  """Prints `ferjax: error: <error>` and exits with status 2."""
  print(f"ferjax: error: {error}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with config-file errors (bad key, type, file or :ARG) as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    # A failing config file comes wrapped with its traceback: keep the head and the cause.
    lines = [line for line in str(e).splitlines() if line.strip()]
    exit_with(lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}")
  except (AttributeError, KeyError) as e:  # ml_collections: override of a missing field.
    exit_with(f"unknown config field in an override: {e}")
