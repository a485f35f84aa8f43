"""Parsing of the `:ARG` suffix of `--config=configs/X.py:ARG`.

ARG is a comma-separated list of `key=value` pairs or bare words; a bare word
sets a boolean flag (big_vision style): `configs/lstpnet.py:synthetic,fold=3`.
"""

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Returns `defaults` updated from ARG, with each value cast to its default's type.

  Raises:
    ValueError: for a key that has no default or a value of the wrong type.
  """
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(defaults))}")
    default = defaults[key]
    if not _:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      parsed[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key}={value!r} is not a boolean")
      parsed[key] = value.lower() in ("true", "1")
    else:
      try:
        parsed[key] = type(default)(value)
      except ValueError:
        raise ValueError(f"config argument {key}={value!r} is not a {type(default).__name__}") from None
  return parsed
