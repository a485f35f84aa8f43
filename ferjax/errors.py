"""How a run ends early: user mistakes as one line without a traceback, preemption."""

import os
import re
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags


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


def _config_file_problem(flag_values: flags.FlagValues) -> str | None:
  """What is wrong with a loaded config flag (get_config() returned no ConfigDict), or None.

  A missing file or directory is refused while parsing (`cli.define_config_flag`
  resolves the file or packaged name first); a get_config() that returns
  another type would surface at the config's first use as a traceback.
  """
  for name in flag_values:
    flag = flag_values[name]
    # Skipped: other flags, and a config flag not given or whose file failed to run.
    if not hasattr(type(flag), "config_filename") or flag.value is None:
      continue
    path = config_flags.get_config_filename(flag).split(":", 1)[0]
    if not isinstance(flag.value, ml_collections.ConfigDict):
      return (f"--{name}: get_config() of {path} returned a {type(flag.value).__name__}, "
              "not an ml_collections.ConfigDict")
  return None


def _flag_error(error: Exception) -> str:
  """One line for an exception raised while parsing the command line."""
  while len(error.args) == 1 and isinstance(error.args[0], Exception):
    error = error.args[0]  # ml_collections wraps the KeyError in an AttributeError.
  message = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
  # ml_collections: an override of a missing field raises KeyError/AttributeError
  # with the field's repr, and possibly a suggestion, as its message.
  if isinstance(error, (AttributeError, KeyError)):
    field = message.splitlines()[0].strip("'\"") if message else "?"
    suggestion = re.search(r'Did you mean "([^"]+)"', message)
    hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else ""
    return f"unknown config field {field!r}{hint}"
  if isinstance(error, SyntaxError):
    return (f"config file {error.filename}, line {error.lineno}: SyntaxError: {error.msg}")
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  if isinstance(error, OSError):  # A config file that cannot be read: the cause is last.
    return f"config file: {lines[-1]}"
  # A failing config file comes wrapped with its traceback: keep the head and the cause.
  return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl flag parsing with every command-line or config-file mistake as one line.

  Covers unknown flags and config fields, wrong types, a config file that is
  missing, a directory, fails to run (syntax error, exception in get_config,
  bad :ARG) or does not return a ConfigDict.
  """
  try:
    remaining = flag_values(argv)
  except Exception as e:  # pylint: disable=broad-except  # config files may raise anything.
    exit_with(_config_file_problem(flag_values) or _flag_error(e))
  problem = _config_file_problem(flag_values)
  if problem:
    exit_with(problem)
  return remaining
