"""What ferjax's command-line entry points share: `--config` and a fast `--help`.

Entry modules define their flags at import time and import JAX, TensorFlow,
TFDS and Orbax only inside `main`, so that `--help` (and a mistyped flag)
answers in about a second instead of after the ML stack has loaded.
"""

from collections.abc import Callable
import sys
import types

from absl import app, flags
from ml_collections import config_flags

from ferjax import configs

HELP_ARGS = ("-h", "--help", "--helpshort", "-?")

# Flags defined through this module's helpers belong to the entry module that
# calls them (they are listed in its --help).
flags.disclaim_key_flags()


class _FileOrNameParser(flags.ArgumentParser):
  """Wraps ml_collections' config-file parser to also take a packaged config name."""

  def __init__(self, file_parser: flags.ArgumentParser):
    self._file_parser = file_parser

  def parse(self, argument: str):
    return self._file_parser.parse(configs.resolve(argument))

  def flag_type(self) -> str:
    return self._file_parser.flag_type()


def define_config_flag(help_string: str, *, lock_config: bool = True,
                       flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagHolder:
  """`--config=FILE[:ARG]` or `--config=NAME[:ARG]` (see `ferjax.configs`), with overrides.

  ml_collections' DEFINE_config_file only loads paths: its flag keeps every
  other behaviour (`--config.a.b=value` overrides, locking), and its parser
  gets the file that `configs.resolve` names.
  """
  holder = config_flags.DEFINE_config_file("config", None, help_string,
                                           flag_values=flag_values, lock_config=lock_config)
  flag_values["config"].parser = _FileOrNameParser(flag_values["config"].parser)
  return holder


def help_text(module: types.ModuleType) -> str:
  """The module's docstring and its key flags (the ones it defines or adopts)."""
  # module_help's first line names the module (`__main__` under `python -m`).
  flag_lines = flags.FLAGS.module_help(module).strip().splitlines()[1:]
  return "\n".join([(module.__doc__ or "").strip(), "", "flags:", *flag_lines])


def run(main: Callable[[list[str]], None], module: types.ModuleType,
        flags_parser: Callable[[list[str]], list[str]] | None = None) -> None:
  """`absl.app.run(main)`, except that `--help` prints `help_text(module)` and exits 0.

  absl's own `--help` exits with status 1 and lists the flags of `sys.argv[0]`,
  which for a console script is the generated wrapper, not the entry module.
  """
  if any(arg in HELP_ARGS for arg in sys.argv[1:]):
    print(help_text(module))
    sys.exit(0)
  app.run(main, flags_parser=flags_parser or app.parse_flags_with_usage)
