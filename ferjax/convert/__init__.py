"""Pretrained weights from PyTorch checkpoints (torch only needed to convert).

`load_init(model, path, partial=...)` fills a model from a converted ferjax
checkpoint directory or directly from a .pth file; `python -m ferjax.convert`
converts a .pth once (see docs/checkpoints.md).
"""

from ferjax.convert.init_from import load_init
from ferjax.convert.state import LoadError, LoadReport

__all__ = ["LoadError", "LoadReport", "load_init"]
