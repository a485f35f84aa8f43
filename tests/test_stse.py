"""ST-SE: soft thresholding, the block against a NumPy reference, gradients,
every switch of docs/methods/stse.md, the ResNet hook, parameter counts and the config."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import stse_resnet50
from ferjax.models import stse
from ferjax.models.resnet import ResNet


def _np_soft(x, tau):
  return np.sign(x) * np.maximum(np.abs(x) - tau, 0.0)


def _param_count(module) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _np_block(block, u, *, train=False):
  """ST-SE / SE forward in NumPy from the block's own parameters (float64)."""
  u = np.asarray(u, np.float64)
  exc = block.excitation
  w1 = np.asarray(exc.fc1.kernel[...], np.float64)
  w2 = np.asarray(exc.fc2.kernel[...], np.float64)
  b1 = np.asarray(exc.fc1.bias[...]) if exc.fc1.bias is not None else 0.0
  b2 = np.asarray(exc.fc2.bias[...]) if exc.fc2.bias is not None else 0.0
  if isinstance(block, stse.SqueezeExcitation):
    g = u.mean(axis=(1, 2))
  elif block.gap_input == "abs_then_mean":
    g = np.abs(u).mean(axis=(1, 2))
  else:
    g = np.abs(u.mean(axis=(1, 2)))
  h = g @ w1 + b1
  if exc.bn is not None:
    bn = exc.bn
    if train:
      mean, var = h.mean(0), h.var(0)
    else:
      mean, var = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
    h = (h - mean) / np.sqrt(var + 1e-5) * np.asarray(bn.scale[...]) + np.asarray(bn.bias[...])
  s = 1.0 / (1.0 + np.exp(-(np.maximum(h, 0.0) @ w2 + b2)))
  if isinstance(block, stse.SqueezeExcitation):
    return u * s[:, None, None, :]
  tau = block.threshold_scale * g * s
  if block.rescale:
    u = u * s[:, None, None, :]
  return _np_soft(u, tau[:, None, None, :])


def _u(seed: int, shape=(2, 4, 4, 16)) -> jax.Array:
  """A random residual-branch output U; tests share shapes to share compilations."""
  return jax.random.normal(jax.random.key(seed), shape)


@pytest.fixture
def x64():
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


def test_soft_threshold_hand_computed():
  x = jnp.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 2.5])
  tau = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
  np.testing.assert_array_equal(stse.soft_threshold(x, tau),
                                [-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.5])


def test_soft_threshold_gradients_hand_computed():
  # dY/dx = 1[|x| > tau]; dY/dtau = -sign(x) 1[|x| > tau]; 0 at the kink |x| = tau.
  x = jnp.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
  tau = jnp.ones_like(x)
  dx, dtau = jax.vmap(jax.grad(stse.soft_threshold, argnums=(0, 1)))(x, tau)
  np.testing.assert_array_equal(dx, [1, 0, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(dtau, [1, 0, 0, 0, 0, 0, -1])


def test_soft_threshold_properties_random():
  u = _u(0)
  tau = jax.random.uniform(jax.random.key(1), (2, 1, 1, 16), maxval=1.5)
  y = np.asarray(stse.soft_threshold(u, tau))
  u, tau = np.asarray(u), np.asarray(tau)
  np.testing.assert_allclose(y, _np_soft(u, tau), atol=1e-6)
  np.testing.assert_array_equal(y == 0, np.abs(u) <= tau)
  assert np.all(np.abs(y) <= np.abs(u))
  assert np.all((np.sign(y) == 0) | (np.sign(y) == np.sign(u)))
  np.testing.assert_allclose(y, u - np.clip(u, -tau, tau), atol=1e-6)


def test_block_thresholds_and_surviving_channels():
  block = stse.SoftThresholdSE(16, reduction=4, rngs=nnx.Rngs(0))
  u = _u(1) * jnp.linspace(0.1, 3.0, 16)
  u = u.at[1, :, :, 3].set(0.0)  # an all-zero channel stays zero (no NaN)
  tau, s = block.thresholds(u, train=False)
  g = np.abs(np.asarray(u)).mean(axis=(1, 2))
  assert tau.shape == s.shape == (2, 16)
  assert np.all(tau >= 0)
  nonzero = g > 0
  assert np.all(np.asarray(tau)[nonzero] < g[nonzero])
  y = np.asarray(block(u, train=False))
  np.testing.assert_allclose(y, _np_block(block, u), atol=1e-5)
  alive = np.abs(y).max(axis=(1, 2)) > 0
  np.testing.assert_array_equal(alive, nonzero)
  assert np.all(np.isfinite(y))


def test_block_gradients_match_finite_differences(x64):
  dtype = jnp.float64
  block = stse.SoftThresholdSE(8, reduction=2, excitation_bias=True, dtype=dtype,
                               rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(block)
  params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
  key_u, key_w, key_v = jax.random.split(jax.random.key(2), 3)
  u = jax.random.normal(key_u, (2, 3, 3, 8), dtype)
  w = jax.random.normal(key_w, u.shape, dtype)

  @jax.jit
  def loss(params, u):
    return jnp.sum(w * nnx.merge(graphdef, params)(u, train=True))

  tau, _ = nnx.merge(graphdef, params).thresholds(u, train=True)
  margin = jnp.min(jnp.abs(jnp.abs(u) - tau[:, None, None, :]))
  eps = 1e-6
  assert margin > 100 * eps, "test input too close to a kink"
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, u)
  for i in range(4):  # directional derivatives along random directions
    keys = jax.random.split(jax.random.fold_in(key_v, i), 2)
    leaves, treedef = jax.tree.flatten(params)
    dirs = jax.tree.unflatten(treedef, [
        jax.random.normal(k, x.shape, dtype)
        for k, x in zip(jax.random.split(keys[0], len(leaves)), leaves)])
    du = jax.random.normal(keys[1], u.shape, dtype)
    shift = lambda t: (jax.tree.map(lambda p, d: p + t * d, params, dirs), u + t * du)
    numeric = (loss(*shift(eps)) - loss(*shift(-eps))) / (2 * eps)
    analytic = (sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads[0]),
                                                   jax.tree.leaves(dirs)))
                + jnp.vdot(grads[1], du))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def _copy_trunk(source: ResNet, target: ResNet) -> ResNet:
  """`target` with every variable taken from `source` at the same path."""
  graphdef, state = nnx.split(target)
  values = dict(nnx.to_flat_state(nnx.state(source)))
  state = nnx.from_flat_state({path: values[path] for path, _ in nnx.to_flat_state(state)})
  return nnx.merge(graphdef, state)


@pytest.mark.parametrize("train", [False, True])
def test_zero_threshold_equals_plain_resnet(train):
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  zero = ResNet(18, 7, residual_attention=stse.residual_attention(threshold_scale=0.0),
                rngs=nnx.Rngs(0))
  active = ResNet(18, 7, residual_attention=stse.residual_attention(), rngs=nnx.Rngs(0))
  plain = _copy_trunk(zero, ResNet(18, 7, rngs=nnx.Rngs(1)))
  expected = plain(x, train=train)["logits"]
  np.testing.assert_allclose(zero(x, train=train)["logits"], expected, atol=1e-5)
  assert np.abs(active(x, train=train)["logits"] - expected).max() > 1e-3


def test_mean_then_abs_threshold_not_larger():
  u = _u(4) + 0.3
  abs_mean = stse.SoftThresholdSE(16, reduction=4, gap_input="abs_then_mean",
                                  rngs=nnx.Rngs(0))
  mean_abs = stse.SoftThresholdSE(16, reduction=4, gap_input="mean_then_abs",
                                  rngs=nnx.Rngs(0))
  g_a, g_m = abs_mean.squeeze(u), mean_abs.squeeze(u)
  np.testing.assert_allclose(g_m, np.abs(np.asarray(u).mean(axis=(1, 2))), atol=1e-6)
  assert np.all(g_m <= g_a + 1e-7) and np.any(g_m < g_a - 1e-3)
  _, s = abs_mean.thresholds(u, train=False)  # the same s for both
  assert np.all(g_m * s <= g_a * s + 1e-7)
  np.testing.assert_allclose(mean_abs(u, train=False), _np_block(mean_abs, u), atol=1e-5)


@pytest.mark.parametrize("channels,reduction,expected", [
    (32, 16, 2 * 32 * 2), (32, 4, 2 * 32 * 8), (32, 1, 2 * 32 * 32), (8, 16, 2 * 8 * 1)])
def test_reduction_sets_parameter_count(channels, reduction, expected):
  block = stse.SoftThresholdSE(channels, reduction=reduction, rngs=nnx.Rngs(0))
  assert _param_count(block) == expected


def test_excitation_bn_and_bias_add_parameters():
  c, h = 16, 4
  base = _param_count(stse.SoftThresholdSE(c, reduction=4, rngs=nnx.Rngs(0)))
  with_bias = stse.SoftThresholdSE(c, reduction=4, excitation_bias=True, rngs=nnx.Rngs(0))
  with_bn = stse.SoftThresholdSE(c, reduction=4, excitation_bn=True, rngs=nnx.Rngs(0))
  assert _param_count(with_bias) == base + h + c
  assert _param_count(with_bn) == base + 2 * h
  assert len(jax.tree.leaves(nnx.state(with_bn, nnx.BatchStat))) == 2
  u = _u(5)
  with_bias.excitation.fc1.bias[...] = jnp.full((h,), 0.1)  # zero-initialised otherwise
  for block in (with_bias, with_bn):
    for train in (False, True):
      np.testing.assert_allclose(block(u, train=train), _np_block(block, u, train=train),
                                 atol=1e-5)


def test_rescale_changes_output():
  u = _u(6)
  plain = stse.SoftThresholdSE(16, reduction=4, rngs=nnx.Rngs(0))
  rescaled = stse.SoftThresholdSE(16, reduction=4, rescale=True, rngs=nnx.Rngs(0))
  y, y_rescaled = plain(u, train=False), rescaled(u, train=False)
  assert np.abs(y - y_rescaled).max() > 1e-2
  np.testing.assert_allclose(y_rescaled, _np_block(rescaled, u), atol=1e-5)


def test_se_mode_and_drsn_cw_mode():
  u = _u(7)
  se = stse.residual_attention(mode="se", reduction=4)(1, 0, 16, nnx.Rngs(0))
  assert isinstance(se, stse.SqueezeExcitation)
  np.testing.assert_allclose(se(u, train=False), _np_block(se, u), atol=1e-5)
  # drsn_cw fixes DRSN-CW's settings whatever the other switches say.
  drsn = stse.residual_attention(mode="drsn_cw", reduction=16, rescale=True,
                                 gap_input="mean_then_abs")(1, 0, 16, nnx.Rngs(0))
  assert drsn.gap_input == "abs_then_mean" and not drsn.rescale
  assert _param_count(drsn) == (16 * 4 + 4) + 2 * 4 + (4 * 16 + 16)
  for train in (False, True):
    np.testing.assert_allclose(drsn(u, train=train), _np_block(drsn, u, train=train),
                               atol=1e-5)


def test_stage_subset_places_blocks():
  hook = stse.residual_attention(stages=(3, 4), reduction=16)
  model = nnx.eval_shape(lambda: ResNet(18, 7, residual_attention=hook, rngs=nnx.Rngs(0)))
  for stage, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4), 1):
    for block in layer:
      assert (block.attention is not None) == (stage in (3, 4))
  plain = nnx.eval_shape(lambda: ResNet(18, 7, rngs=nnx.Rngs(0)))
  # ResNet-18: 2 basic blocks per stage, outputs 256 / 512 channels in stages 3 / 4.
  assert _param_count(model) - _param_count(plain) == 2 * (256 ** 2 + 512 ** 2) // 8


@pytest.mark.parametrize("bad,match", [
    (dict(mode="cbam"), "stse.mode"), (dict(stages=(0, 1)), "stse.stages"),
    (dict(stages=()), "stse.stages"), (dict(gap_input="max"), "stse.gap_input"),
    (dict(reduction=0), "stse.reduction")])
def test_invalid_switches_raise(bad, match):
  with pytest.raises(ValueError, match=match):
    stse.residual_attention(**bad)(1, 0, 16, nnx.Rngs(0))


def test_parameter_counts_resnet50():
  config = stse_resnet50.get_config("rafdb")

  def count(num_classes, **switches):
    config.model.stse.update(switches)
    model = nnx.eval_shape(lambda: stse.from_config(config.model, num_classes,
                                                    rngs=nnx.Rngs(0)))
    return _param_count(model)

  assert count(1000) == 25_557_032 + 2_514_944
  assert count(7) == 26_037_319
  assert count(8) == 26_039_368
  assert count(7, reduction=4) == 26_037_319 - 2_514_944 + 10_059_776
  assert count(1000, reduction=16, enabled=False) == 25_557_032


def test_config_variants():
  config = stse_resnet50.get_config(None)
  assert config.model.name == "stse_resnet" and config.model.depth == 50
  assert config.dataset.name == "rafdb" and config.model.stse.enabled
  assert (config.optimizer.learning_rate, config.batch_size, config.num_epochs) == (0.01, 64, 60)
  synthetic = stse_resnet50.get_config("synthetic")
  assert synthetic.dataset.name == "synthetic_fer/images_pose"
  assert synthetic.dataset.metadata == ("yaw", "pitch") and synthetic.evals.pose.buckets
  assert not stse_resnet50.get_config("synthetic,plain").model.stse.enabled
  assert stse_resnet50.get_config("pose_affectnet").dataset.num_classes == 8
  bu3dfe = stse_resnet50.get_config("bu3dfe,protocol=p2,fold=3")
  assert (bu3dfe.dataset.name, bu3dfe.dataset.fold) == ("bu3dfe/p2", 3)
  assert stse_resnet50.get_config("multipie,fold=2").dataset.num_classes == 6
  with pytest.raises(ValueError, match="one dataset"):
    stse_resnet50.get_config("rafdb,synthetic")
  with pytest.raises(ValueError, match="fold"):
    stse_resnet50.get_config("multipie,fold=0")
