"""Helpers shared by the checkpoint-conversion tests."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


def blank_model(build: Callable[[nnx.Rngs], nnx.Module]) -> nnx.Module:
  """The module `build(rngs)` with every variable zero: its shapes without running init.

  Eager random init of a ResNet-50 takes tens of seconds on a busy 2-core box;
  the loads under test overwrite (strict) or report (partial) every variable.
  """
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
  return nnx.merge(graphdef, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state))
