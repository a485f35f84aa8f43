"""The computation dtype named by `config.model.dtype`, shared by every model."""

import jax.numpy as jnp


def compute_dtype(name: str):
  """'float32' | 'bfloat16' -> the jnp dtype, with a one-line error otherwise."""
  if name not in ("float32", "bfloat16"):
    raise ValueError(f"config.model.dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.dtype(name)
