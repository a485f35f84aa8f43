"""Pretrained weights from PyTorch checkpoints (torch only needed to convert).

`load_init(model, path, partial=...)` fills a model from a converted ferjax
checkpoint directory or directly from a .pth file; `python -m ferjax.convert`
converts a .pth once (see docs/checkpoints.md).
"""

import importlib

__all__ = ["LoadError", "LoadReport", "load_init"]

# Resolved on first use (PEP 562): importing the package for `python -m
# ferjax.convert --help` must not load JAX and Flax.
_LAZY = {"load_init": "ferjax.convert.init_from", "LoadError": "ferjax.convert.state",
         "LoadReport": "ferjax.convert.state"}


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
