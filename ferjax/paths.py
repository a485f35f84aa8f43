"""Path flags and config fields: `~` and relative paths made absolute, empty ones refused.

Orbax refuses relative checkpoint paths and bash does not expand `~` after
`--flag=`, so every path a run is given goes through `absolute` before use.
Remote paths (`gs://bucket/dir`) are kept as they are.
"""

import os

from ferjax import errors


def is_remote(path: str) -> bool:
  """Whether `path` names a remote filesystem (`gs://`, `s3://`, ...)."""
  return "://" in path


def absolute(path: str, name: str, *, directory: bool = True) -> str:
  """`path` with `~` expanded, made absolute against the working directory.

  Args:
    path: the value given by the user.
    name: how the user gave it, for the error (`--workdir`, `config.init_from`).
    directory: whether `path` must be a directory (or not exist yet).

  Raises:
    UserError: `path` is empty, or it or a directory on the way to it is a regular file.
  """
  if not path or not path.strip():
    raise errors.UserError(f"{name} is empty: give a directory (relative paths and ~ work)")
  if is_remote(path):
    return path
  resolved = os.path.abspath(os.path.expanduser(path))
  if directory and os.path.isfile(resolved):
    raise errors.UserError(f"{name}={path} is a file, not a directory")
  parent = os.path.dirname(resolved)
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if parent and not os.path.isdir(parent):
    raise errors.UserError(f"{name}={path} is not writable: {parent} is a file, not a "
                           "directory")
  return resolved
