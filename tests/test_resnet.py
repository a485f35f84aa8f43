"""The torchvision-layout ResNet and its block hooks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ferjax.models import resnet


def _num_params(model) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("depth, expected", [(18, 11_689_512), (34, 21_797_672),
                                             (50, 25_557_032)])
def test_parameter_counts_equal_torchvision(depth, expected):
  model = nnx.eval_shape(lambda: resnet.ResNet(depth, 1000, rngs=nnx.Rngs(0)))
  assert _num_params(model) == expected


def test_shapes_of_stages_and_outputs():
  model = resnet.ResNet(18, 7, rngs=nnx.Rngs(0))
  x = jnp.ones((2, 64, 64, 3))
  shapes = [s.shape for s in model.stages(x, train=False)]
  assert shapes == [(2, 16, 16, 64), (2, 8, 8, 128), (2, 4, 4, 256), (2, 2, 2, 512)]
  out = model(x, train=False)
  assert out["logits"].shape == (2, 7) and out["features"].shape == (2, 512)
  assert resnet.ResNet(18, None, rngs=nnx.Rngs(0))(x, train=False).keys() == {"features"}


class _Scale(nnx.Module):
  """A hook block that multiplies its input by a constant."""

  def __init__(self, factor: float):
    self.factor = factor

  def __call__(self, x, *, train):
    return x * self.factor


def _block(input_gate=None, residual_attention=None, *, in_features=8, stride=1):
  return resnet.BasicBlock(2, 1, in_features, 8, stride, input_gate=input_gate,
                           residual_attention=residual_attention, rngs=nnx.Rngs(0))


def test_input_gate_feeds_the_branch_but_not_the_identity_shortcut():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
  plain = _block()
  gated = _block(input_gate=lambda *_: _Scale(0.0))
  nnx.update(gated, nnx.state(plain))
  # A zero gate leaves only BN biases (zero at init) in the branch: out = relu(x).
  np.testing.assert_allclose(gated(x, train=False), jax.nn.relu(x), atol=1e-6)


def test_input_gate_feeds_the_projection_shortcut():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 4))
  gated = _block(input_gate=lambda *_: _Scale(0.0), in_features=4, stride=2)
  assert gated.downsample is not None
  np.testing.assert_allclose(gated(x, train=False), 0.0, atol=1e-6)


def test_residual_attention_acts_before_the_add():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
  block = _block(residual_attention=lambda *_: _Scale(0.0))
  np.testing.assert_allclose(block(x, train=False), jax.nn.relu(x), atol=1e-6)
  calls = []
  resnet.ResNet(18, 7, residual_attention=lambda s, b, c, r: calls.append((s, b, c)),
                rngs=nnx.Rngs(0))
  assert calls == [(1, 0, 64), (1, 1, 64), (2, 0, 128), (2, 1, 128), (3, 0, 256), (3, 1, 256),
                   (4, 0, 512), (4, 1, 512)]


def test_bad_depth_is_an_error():
  with pytest.raises(ValueError, match="model.depth"):
    resnet.ResNet(19, 7, rngs=nnx.Rngs(0))
