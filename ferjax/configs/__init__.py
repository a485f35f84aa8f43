"""ferjax's configs, one module per method, each with `get_config(arg: str | None)`.

`--config` of the entry points takes a config file or the name of one of these
modules, each optionally followed by `:ARG`:

  --config=configs/lstpnet.py:fold=2   a file (the repository's configs/*.py
                                       are thin files that import these);
  --config=lstpnet:fold=2              this package's lstpnet.py, from any
                                       directory and from an installed wheel.
"""

import os

NAMES = ("default", "lstpnet", "msfe", "resnet", "slm_aea", "stse_resnet50")


def resolve(spec: str) -> str:
  """`FILE[:ARG]` or `NAME[:ARG]` -> `FILE[:ARG]`, the form ml_collections loads.

  A path that exists wins over a packaged name (a local `resnet` file shadows
  the packaged `resnet`).

  Raises:
    ValueError: `spec` is neither an existing file nor a packaged name.
  """
  location, colon, arg = spec.partition(":")
  if os.path.isfile(location):
    return spec
  name = location.removesuffix(".py")
  if name in NAMES:
    return os.path.join(os.path.dirname(__file__), f"{name}.py") + colon + arg
  raise ValueError(f"no config file {location!r} (from {os.getcwd()}) and no packaged config "
                   f"of that name; packaged: {', '.join(NAMES)} (e.g. --config=resnet:smoke)")
