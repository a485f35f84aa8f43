"""Parameter initialisers that reproduce PyTorch's and torchvision's defaults.

Matching the reference initialisation matters for the parts that are trained
from scratch on top of imported backbones (e.g. LSTPNet's TCE and LSTformer).
"""

import jax
import jax.numpy as jnp
from flax import nnx

# torchvision ResNet convs: kaiming_normal_(mode="fan_out", nonlinearity="relu").
resnet_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

# torch.nn.Linear / ConvNd weights: kaiming_uniform_(a=sqrt(5)), i.e.
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int) -> nnx.Initializer:
  """torch.nn.Linear / ConvNd bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / max(fan_in, 1) ** 0.5

  def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init
