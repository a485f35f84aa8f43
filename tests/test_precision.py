"""Float32 parameter gradients of bfloat16 layers (ferjax.models.precision)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ferjax.configs import resnet as resnet_config
from ferjax.models import precision, registry, small_map_conv
from ferjax.models.tce import TemporalChannelExcitation

BF16 = jnp.bfloat16


def _loss(model, x, cotangent, *args):
  """sum(ct * y): the output cotangent is `ct` (bfloat16 numbers), whatever y's rounding."""
  return jnp.sum(model(x, *args).astype(jnp.float32) * cotangent)


def _cotangent(shape) -> jax.Array:
  return jnp.asarray(np.random.default_rng(9).normal(size=shape), BF16).astype(jnp.float32)


def _exact(f, *args):
  """f(*args) compiled without excess precision: every rounding to bfloat16 that the
  program asks for happens (by default XLA may skip one between two ops)."""
  return jax.jit(f).lower(*args).compile({"xla_allow_excess_precision": False})(*args)


def _forward(model, x, *mode):
  return _exact(lambda m, x: m(x, *mode), model, x)


def _grad(model, x, cotangent, *mode):
  return _exact(nnx.grad(lambda m, x, ct: _loss(m, x, ct, *mode)), model, x, cotangent)


def _input_grad(model, x, cotangent):
  return _exact(jax.grad(_loss, argnums=1), model, x, cotangent)


def _as64(a) -> np.ndarray:
  return np.asarray(jnp.asarray(a, jnp.float32), np.float64)


def _bfloat16_valued(a) -> bool:
  """Whether every value of float32 `a` is a bfloat16 number (a sum rounded to bfloat16)."""
  a = np.asarray(a, np.float32)
  return bool(np.all(a == np.asarray(jnp.asarray(a, BF16), np.float32)))


def _conv_kernel_gradient(x: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
  """d/dk of sum(ct * conv(x, k)), 3x3, padding 1, float64:
  dk[a, b, c, o] = sum_{n, i, j} pad(x)[n, i + a, j + b, c] ct[n, i, j, o]."""
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = cotangent.shape[1:3]
  return np.stack([np.stack([np.einsum("nijc,nijo->co", padded[:, a:a + h, b:b + w], cotangent)
                             for b in range(3)]) for a in range(3)])


@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_bfloat16_layer_gradients_are_float32_sums(layer):
  rng = np.random.default_rng(0)
  if layer == "conv":
    make = lambda cls: cls(3, 5, (3, 3), padding=((1, 1), (1, 1)), dtype=BF16,
                           conv_general_dilated=small_map_conv.conv_general_dilated,
                           rngs=nnx.Rngs(0))
    classes = precision.Conv, nnx.Conv
    x = jnp.asarray(rng.normal(size=(8, 5, 5, 3)) * 3, BF16)   # 25 outputs: library conv
  else:
    make = lambda cls: cls(6, 5, dtype=BF16, rngs=nnx.Rngs(0))
    classes = precision.Linear, nnx.Linear
    x = jnp.asarray(rng.normal(size=(8, 7, 6)) * 3, BF16)      # two leading axes summed
  mixed, plain = map(make, classes)
  # A large bias: its rounding to bfloat16 shows in the output.
  mixed.bias[...] = plain.bias[...] = jnp.asarray(rng.normal(size=(5,)) * 100, jnp.float32)
  assert mixed.mixed and set(nnx.state(mixed, nnx.Param)) == {"kernel", "bias"}

  y = _forward(mixed, x)
  assert y.dtype == BF16
  np.testing.assert_array_equal(_as64(y), _as64(_forward(plain, x)))
  ct = _cotangent(y.shape)
  np.testing.assert_array_equal(_as64(_input_grad(mixed, x, ct)),
                                _as64(_input_grad(plain, x, ct)))
  grads, plain_grads = _grad(mixed, x, ct), _grad(plain, x, ct)
  assert grads["kernel"].dtype == grads["bias"].dtype == jnp.float32

  cotangent, leading = _as64(ct), tuple(range(y.ndim - 1))
  if layer == "conv":
    dk = _conv_kernel_gradient(_as64(x), cotangent)
  else:
    dk = np.einsum("bti,bto->io", _as64(x), cotangent)
  # Float32 products of bfloat16 values, summed in float32 ...
  np.testing.assert_allclose(_as64(grads["kernel"][...]), dk, rtol=1e-5,
                             atol=1e-5 * np.abs(dk).max())
  np.testing.assert_allclose(_as64(grads["bias"][...]), cotangent.sum(leading), rtol=1e-5)
  # ... where the plain layer's sums are rounded to bfloat16.
  assert np.abs(_as64(plain_grads["kernel"][...]) - dk).max() > 1e-3 * np.abs(dk).max()
  assert _bfloat16_valued(plain_grads["bias"][...])


@pytest.mark.parametrize("layer", ["batch_norm", "layer_norm"])
def test_bfloat16_norm_scale_and_bias_gradients_are_float32_sums(layer):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(8, 3, 3, 6)) * 3 + 1, BF16)
  classes = ((precision.BatchNorm, nnx.BatchNorm) if layer == "batch_norm"
             else (precision.LayerNorm, nnx.LayerNorm))
  mixed, plain = (cls(6, epsilon=1e-5, use_fast_variance=False, dtype=BF16, rngs=nnx.Rngs(0))
                  for cls in classes)
  scale = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(6,)) * 5, jnp.float32)
  for module in (mixed, plain):
    module.scale[...], module.bias[...] = scale, bias
  # BatchNorm: batch statistics (train) and running averages (eval), both as Flax computes.
  modes = ((False,), (True,)) if layer == "batch_norm" else ((),)
  for mode in modes:
    y = _forward(mixed, x, *mode)
    assert y.dtype == BF16
    np.testing.assert_array_equal(_as64(y), _as64(_forward(plain, x, *mode)))
  train, ct = modes[0], _cotangent(x.shape)
  grads = _grad(mixed, x, ct, *train)
  axes = (0, 1, 2) if layer == "batch_norm" else (3,)
  centred = _as64(x) - _as64(x).mean(axes, keepdims=True)
  normalised = centred / np.sqrt((centred ** 2).mean(axes, keepdims=True) + 1e-5)
  cotangent = _as64(ct)
  np.testing.assert_allclose(_as64(grads["scale"][...]), (cotangent * normalised).sum((0, 1, 2)),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(_as64(grads["bias"][...]), cotangent.sum((0, 1, 2)), rtol=1e-5,
                             atol=1e-5)
  plain_grads = _grad(plain, x, ct, *train)
  assert _bfloat16_valued(plain_grads["scale"][...]) and _bfloat16_valued(plain_grads["bias"][...])


def test_param_term_added_in_float32_rounds_like_bfloat16():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(64, 8)) * np.exp(rng.normal(size=(64, 8)) * 4), BF16)
  term = jnp.asarray(rng.normal(size=(8,)) * np.exp(rng.normal(size=(8,)) * 4), jnp.float32)
  add = jax.jit(precision.add_param_term, static_argnames="mixed")
  np.testing.assert_array_equal(_as64(add(x, term, mixed=True)), _as64(add(x, term, mixed=False)))
  loss = lambda term, mixed: jnp.sum(add(x, term, mixed=mixed).astype(jnp.float32) * 3)
  np.testing.assert_allclose(_as64(jax.grad(loss)(term, True)), np.full(8, 3 * 64.0))
  wide = jnp.asarray(rng.normal(size=(64, 8)), BF16)
  ct_loss = lambda term, mixed: jnp.sum(add(x, term, mixed=mixed).astype(jnp.float32) * wide)
  np.testing.assert_allclose(_as64(jax.grad(ct_loss)(term, True)), _as64(wide).sum(0), rtol=1e-6)
  assert _bfloat16_valued(jax.grad(ct_loss)(term, False))


def test_float32_and_compute_policy_layers_are_plain_flax():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 4, 4, 3)), jnp.float32)
  ct = _cotangent((2, 4, 4, 4))
  grad_hlo = lambda layer, x: jax.jit(nnx.grad(_loss)).lower(layer, x, ct).as_text()
  make = lambda cls, dtype: cls(3, 4, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype,
                                rngs=nnx.Rngs(0))
  assert not make(precision.Conv, jnp.float32).mixed
  assert grad_hlo(make(precision.Conv, jnp.float32), x) == grad_hlo(make(nnx.Conv, jnp.float32), x)
  with precision.gradient_dtype("compute"):
    compute = make(precision.Conv, BF16)
  assert not compute.mixed
  assert grad_hlo(compute, x.astype(BF16)) == grad_hlo(make(nnx.Conv, BF16), x.astype(BF16))
  assert make(precision.Conv, BF16).mixed     # the default policy outside the context
  with pytest.raises(ValueError, match="config.model.grad_dtype"):
    with precision.gradient_dtype("bfloat16"):
      pass


def test_tce_by_hand_channel_conv_takes_float32_gradients():
  # TCE applies channel_conv1's kernel and bias by hand (an einsum and a broadcast add).
  x = jnp.asarray(np.random.default_rng(4).normal(size=(4, 3, 3, 16)), BF16)   # 2 clips x 2
  with precision.gradient_dtype("compute"):
    compute = TemporalChannelExcitation(16, 2, dtype=BF16, rngs=nnx.Rngs(0))
  mixed = TemporalChannelExcitation(16, 2, dtype=BF16, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(_as64(_forward(mixed, x)), _as64(_forward(compute, x)))
  ct = _cotangent(x.shape)
  grads = dict(nnx.to_flat_state(_grad(mixed, x, ct)))
  compute_grads = dict(nnx.to_flat_state(_grad(compute, x, ct)))
  assert set(grads) == {(layer, name) for layer in ("channel_conv1", "channel_conv2")
                        for name in ("kernel", "bias")} | {("temporal_conv", "kernel")}
  for path, value in grads.items():
    # "compute": sums rounded to bfloat16 (temporal_conv, used twice, adds two in float32);
    # float32: float32 sums, close to those.
    assert _bfloat16_valued(compute_grads[path][...]) == (path[0] != "temporal_conv"), path
    assert not _bfloat16_valued(value[...]), path
    expected = np.asarray(compute_grads[path][...])
    np.testing.assert_allclose(np.asarray(value[...]), expected, rtol=0.02,
                               atol=0.02 * np.abs(expected).max(), err_msg=str(path))


def test_build_model_reads_the_policy_from_the_config():
  model_config = resnet_config.get_config("smoke").model
  model_config.dtype = "bfloat16"

  def layers_mixed(model_config):
    model = nnx.eval_shape(lambda: registry.build_model(model_config, 7, rngs=nnx.Rngs(0)))
    return {m.mixed for _, m in nnx.iter_graph(model) if hasattr(m, "mixed")}

  assert layers_mixed(model_config) == {True}
  model_config.grad_dtype = "compute"
  assert layers_mixed(model_config) == {False}
  del model_config["grad_dtype"]    # the config.json of a run from before the field
  assert layers_mixed(model_config) == {True}
