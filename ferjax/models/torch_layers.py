"""Flax NNX layers built with PyTorch's default settings and initialisation.

For the parts of ported models that PyTorch trains from its defaults (they are
not in the imported checkpoint): weights kaiming-uniform with a=sqrt(5),
i.e. U(+-1/sqrt(fan_in)), biases U(+-1/sqrt(fan_in)), LayerNorm epsilon 1e-5.
"""

from typing import Any

from flax import nnx

from ferjax.models import init, precision


def linear(in_features: int, out_features: int, *, use_bias: bool = True, dtype: Any,
           rngs: nnx.Rngs) -> precision.Linear:
  """torch.nn.Linear(in_features, out_features, bias=use_bias)."""
  return precision.Linear(in_features, out_features, use_bias=use_bias,
                          kernel_init=init.torch_default_kernel_init,
                          bias_init=init.torch_default_bias_init(in_features), dtype=dtype,
                          rngs=rngs)


def conv1d(in_features: int, out_features: int, kernel: int, *, groups: int = 1,
           use_bias: bool = True, dtype: Any, rngs: nnx.Rngs) -> precision.Conv:
  """torch.nn.Conv1d(in, out, kernel, padding=(kernel-1)//2, groups) on `[N, L, C]`."""
  pad = (kernel - 1) // 2
  return precision.Conv(in_features, out_features, (kernel,), padding=((pad, pad),),
                        feature_group_count=groups, use_bias=use_bias,
                        kernel_init=init.torch_default_kernel_init,
                        bias_init=init.torch_default_bias_init(in_features // groups * kernel),
                        dtype=dtype, rngs=rngs)


def layer_norm(features: int, *, dtype: Any, rngs: nnx.Rngs) -> precision.LayerNorm:
  """torch.nn.LayerNorm(features): epsilon 1e-5, two-pass variance, scale 1, bias 0."""
  return precision.LayerNorm(features, epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                             rngs=rngs)
