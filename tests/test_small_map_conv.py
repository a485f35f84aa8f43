"""The shifted-matmul convolution equals lax.conv_general_dilated, value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from ferjax import scaling
from ferjax.models import resnet, small_map_conv

NHWC = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x, w, stride, pad):
  return lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                  dimension_numbers=NHWC)


def test_hand_computed_1x1_output():
  # 2x2 input, 3x3 kernel, padding 1, stride 2: one output pixel that sees the
  # input at kernel taps (1,1),(1,2),(2,1),(2,2).
  x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
  w = jnp.arange(9.0).reshape(3, 3, 1, 1)
  out = small_map_conv.shifted_matmul_conv(x, w, (2, 2), ((1, 1), (1, 1)))
  assert out.shape == (1, 1, 1, 1)
  assert float(out[0, 0, 0, 0]) == 1 * 4 + 2 * 5 + 3 * 7 + 4 * 8


@pytest.mark.parametrize("size,kernel,stride", [(1, 3, 1), (2, 3, 1), (3, 3, 1), (4, 3, 2),
                                                (3, 3, 2), (4, 1, 2), (2, 1, 1), (5, 3, 2)])
def test_matches_lax_value_and_gradient(size, kernel, stride):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (3, size, size, 5))
  w = jax.random.normal(kw, (kernel, kernel, 5, 4))
  pad = kernel // 2
  ours = lambda x, w: small_map_conv.shifted_matmul_conv(x, w, (stride, stride),
                                                         ((pad, pad), (pad, pad)))
  theirs = lambda x, w: _lax_conv(x, w, stride, pad)
  np.testing.assert_allclose(ours(x, w), theirs(x, w), rtol=1e-5, atol=1e-5)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  for g_ours, g_theirs in zip(jax.grad(loss(ours), (0, 1))(x, w),
                              jax.grad(loss(theirs), (0, 1))(x, w)):
    np.testing.assert_allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-4)


def test_dispatch_only_for_small_ungrouped_outputs(monkeypatch):
  calls = []
  monkeypatch.setattr(small_map_conv, "shifted_matmul_conv",
                      lambda *a, **k: calls.append(a[0].shape) or jnp.zeros((1, 2, 2, 4)))
  dn = lax.conv_dimension_numbers((1, 8, 8, 4), (3, 3, 4, 4), NHWC)
  w = jnp.ones((3, 3, 4, 4))
  small_map_conv.conv_general_dilated(jnp.ones((1, 2, 2, 4)), w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=dn)
  small_map_conv.conv_general_dilated(jnp.ones((1, 8, 8, 4)), w, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=dn)
  small_map_conv.conv_general_dilated(jnp.ones((1, 2, 2, 4)), jnp.ones((3, 3, 2, 4)),
                                      (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn,
                                      feature_group_count=2)
  small_map_conv.conv_general_dilated(jnp.ones((1, 2, 2, 4)), w, (1, 1), ((1, 1), (1, 1)),
                                      rhs_dilation=(2, 2), dimension_numbers=dn)
  assert calls == [(1, 2, 2, 4)]


def test_resnet_logits_unchanged_by_the_shortcut(monkeypatch):
  """Runs on CPU through the shortcut (layer3/4 maps are 2x2/1x1) and matches the library."""
  model = resnet.ResNet(18, 7, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))   # layer3 2x2, layer4 1x1
  fast = model(x, train=False)["logits"]
  monkeypatch.setattr(small_map_conv, "MAX_OUTPUT_PIXELS", 0)
  reference = model(x, train=False)["logits"]
  np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-5)


def _grad_hlo(device) -> str:
  """Compiled HLO of a 3x3 conv's gradient on a 2x2 map (the shortcut's shape) for `device`."""
  conv = resnet.conv(8, 8, 3, dtype=jnp.float32, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(conv)
  on_device = jax.sharding.SingleDeviceSharding(device)
  spec = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_device)
  loss = lambda state, x: jnp.sum(jnp.sin(nnx.merge(graphdef, state)(x)))
  return jax.jit(jax.grad(loss, (0, 1))).lower(
      jax.tree.map(spec, state), spec(jnp.zeros((2, 2, 2, 8)))).compile().as_text()


def test_cpu_path_only_in_cpu_executables():
  """The platform is the compiled program's, not the host's: a TPU program compiled on
  this CPU host holds only library convolutions."""
  assert small_map_conv.SHORTCUT_SCOPE in _grad_hlo(jax.devices("cpu")[0])
  tpu = scaling.make_target("v5e:2x2").devices[0]   # libtpu: the `test` extra installs jax[tpu]
  tpu_hlo = _grad_hlo(tpu)
  assert small_map_conv.SHORTCUT_SCOPE not in tpu_hlo
  assert " convolution(" in tpu_hlo
