"""MSFE network (docs/methods/msfe.md), its parameter count and its config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import msfe as msfe_config
from ferjax.models import msfe, stse


def np_channel_attention(x, gamma, variant):
  """NumPy CSA on `[B, H, W, C]`: per example X = [C, M], Z = gamma A X + X."""
  b, h, w, c = x.shape
  out = np.empty_like(x, dtype=np.float64)
  for n in range(b):
    feats = x[n].reshape(h * w, c).T.astype(np.float64)    # [C, M]
    energy = feats @ feats.T
    if variant == "scaled":
      logits = energy / np.sqrt(h * w)
    else:
      logits = energy.max(axis=1, keepdims=True) - energy
    logits = logits - logits.max(axis=1, keepdims=True)
    attention = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    out[n] = (gamma * attention @ feats + feats).T.reshape(h, w, c)
  return out


@pytest.mark.parametrize("variant", ["scaled", "danet"])
def test_channel_attention_is_identity_at_gamma_zero(variant):
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
  block = msfe.ChannelSelfAttention(variant=variant)
  assert float(block.gamma[...]) == 0.0
  y = block(x, train=True)
  assert y.shape == x.shape
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


@pytest.mark.parametrize("variant", ["scaled", "danet"])
def test_channel_attention_matches_numpy(variant):
  x = np.random.default_rng(0).normal(size=(2, 3, 2, 5)).astype(np.float32)
  block = msfe.ChannelSelfAttention(variant=variant)
  block.gamma.set_value(jnp.asarray(0.7))
  y = block(jnp.asarray(x), train=False)
  assert y.shape == x.shape
  np.testing.assert_allclose(np.asarray(y), np_channel_attention(x, 0.7, variant),
                             rtol=1e-5, atol=1e-5)


def test_tap_attention_variants():
  assert isinstance(msfe.tap_attention("se", 32, reduction=16, dtype=jnp.float32,
                                       rngs=nnx.Rngs(0)), stse.SqueezeExcitation)
  danet = msfe.tap_attention("danet", 32, reduction=16, dtype=jnp.float32, rngs=nnx.Rngs(0))
  assert isinstance(danet, msfe.ChannelSelfAttention) and danet.variant == "danet"
  with pytest.raises(ValueError, match="model.msfe.attention"):
    msfe.tap_attention("cbam", 32, reduction=16, dtype=jnp.float32, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("attention,taps", [("scaled", (2, 3, 4)), ("se", (4, 1))])
def test_network_output_shapes(attention, taps):
  model = nnx.eval_shape(lambda: msfe.MultiscaleNetwork(
      5, taps=taps, attention=attention, branch_dim=8, embed_dim=12, rngs=nnx.Rngs(0)))
  assert model.taps == tuple(sorted(taps))
  outputs = nnx.eval_shape(lambda m, x: m(x, train=True), model, jnp.ones((2, 32, 32, 3)))
  assert outputs["logits"].shape == (2, 5)
  assert outputs["features"].shape == (2, 12)
  assert model.embed.in_features == 8 * len(taps)


def test_network_rejects_bad_taps():
  with pytest.raises(ValueError, match="model.msfe.taps"):
    msfe.MultiscaleNetwork(7, taps=(2, 5), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="model.msfe.taps"):
    msfe.MultiscaleNetwork(7, taps=(), rngs=nnx.Rngs(0))


def test_default_config_parameter_count():
  config = msfe_config.get_config("rafdb")
  model = nnx.eval_shape(lambda: msfe.from_config(config.model, 7, rngs=nnx.Rngs(0)))
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  # Headless torchvision ResNet-18: stem conv + BN, then per stage
  # (conv3x3s + BNs, plus a 1x1 downsample conv + BN in stages 2-4).
  stem = 7 * 7 * 3 * 64 + 2 * 64
  layer1 = 4 * (9 * 64 * 64 + 2 * 64)

  def stage(c_in, c):
    return (9 * c_in * c + 3 * 9 * c * c + 4 * 2 * c
            + c_in * c + 2 * c)

  backbone = stem + layer1 + stage(64, 128) + stage(128, 256) + stage(256, 512)
  assert backbone == 11_689_512 - (512 * 1000 + 1000)   # torchvision minus its fc
  gammas = 3
  branches = (128 + 256 + 512) * 256 + 3 * 2 * 256   # 1x1 convs C_i -> 256 + BNs
  fusion = 768 * 512 + 512 + 2 * 512                 # Linear(768 -> 512) + BN1d
  classifier = 512 * 7 + 7
  assert count == backbone + gammas + branches + fusion + classifier == 11_805_770


@pytest.mark.parametrize("arg,dataset,classes,objective", [
    (None, "rafdb", 7, "center_cosine"),
    ("rafdb", "rafdb", 7, "center_cosine"),
    ("affectnet", "affectnet/csv", 7, "center_cosine"),
    ("affectnet,classes=8,ran", "affectnet/csv", 8, "center_cosine"),
    ("ferplus", "ferplus/label_csv_majority", 8, "center_cosine"),
    ("synthetic", "synthetic_fer/images", 7, "center_cosine"),
    ("synthetic,ce", "synthetic_fer/images", 7, "cross_entropy"),
])
def test_config_variants(arg, dataset, classes, objective):
  config = msfe_config.get_config(arg)
  assert config.dataset.name == dataset
  assert config.dataset.num_classes == classes
  assert config.objective.name == objective
  assert config.model.name == "msfe" and "embedding" in config.evals
  assert "centers" in config.optimizer.no_decay
  assert bool(config.dataset.extra_eval_splits) == ("ran" in (arg or ""))
  if dataset != "synthetic_fer/images":
    assert (config.input.image_size, config.optimizer.name, config.optimizer.learning_rate,
            config.batch_size, config.num_epochs, config.schedule.name,
            config.schedule.decay_rate) == (224, "adam", 1e-4, 64, 40, "exponential", 0.9)


@pytest.mark.parametrize("arg", ["rafdb,ferplus", "rafdb,classes=8", "synthetic,classes=8",
                                 "synthetic,ran", "cifar"])
def test_config_rejects_bad_variants(arg):
  with pytest.raises(ValueError):
    msfe_config.get_config(arg)


def test_from_config_builds_the_configured_network():
  config = msfe_config.get_config("synthetic").model
  config.msfe.taps = (3, 4)
  config.msfe.attention = "danet"
  config.msfe.branch_dim = 16
  config.msfe.embed_dim = 24
  model = msfe.from_config(config, 7, rngs=nnx.Rngs(0))
  assert model.taps == (3, 4) and model.branches[0].attention.variant == "danet"
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  outputs = nnx.jit(lambda m, x: m(x, train=True))(model, images)
  assert outputs["logits"].shape == (4, 7) and outputs["features"].shape == (4, 24)
  # f is the BatchNorm1d output: in training mode each feature has batch mean 0.
  np.testing.assert_allclose(np.asarray(outputs["features"]).mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(
      np.asarray(outputs["logits"]),
      np.asarray(outputs["features"]) @ np.asarray(model.fc.kernel[...])
      + np.asarray(model.fc.bias[...]), rtol=1e-4, atol=1e-5)
  config.dtype = "float16"
  with pytest.raises(ValueError, match="config.model.dtype"):
    msfe.from_config(config, 7, rngs=nnx.Rngs(0))
