"""LSTPNet and the frame-average baseline: sizes, backbone structure, clip isolation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import lstpnet as lstpnet_config
from ferjax.models import frame_average, lstpnet
from ferjax.models.tce import TemporalChannelExcitation


def _count(module) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


FRAMES = 16


def _fill(module, seed):
  """Concrete values for an abstract module: kernels N(0, 1/fan_in), biases N(0, 0.1^2),
  norm scales and running variances 1, running means 0 (no initialiser to compile)."""
  rng = np.random.default_rng(seed)

  def value(path, leaf):
    name = [k.key for k in path if hasattr(k, "key")][-1]  # the variable's attribute name
    if name == "kernel":
      fan_in = math.prod(leaf.shape[:-1])
      return rng.normal(size=leaf.shape) / math.sqrt(fan_in)
    if name in ("scale", "var"):
      return np.ones(leaf.shape)
    if name == "mean":
      return np.zeros(leaf.shape)
    return 0.1 * rng.normal(size=leaf.shape)

  state = nnx.state(module)
  nnx.update(module, jax.tree.map_with_path(
      lambda p, x: jnp.asarray(value(p, x), x.dtype), state))
  return module


@pytest.fixture(scope="module")
def model():
  """A 16-frame, 7-class LSTPNet with concrete (non-trained) values."""
  return _fill(nnx.eval_shape(lambda: lstpnet.LSTPNet(7, FRAMES, rngs=nnx.Rngs(0))), 0)


def test_parameter_counts_match_spec(model):
  backbone_tces = [b.input_gate for layer in (model.backbone.layer2, model.backbone.layer3,
                                              model.backbone.layer4) for b in layer]
  in_block_tce = sum(_count(t) for t in backbone_tces)
  layer = model.lstformer.layers[0]
  assert _count(model) == 24_619_686
  assert _count(model.backbone) == 12_473_310
  assert _count(model.backbone) - in_block_tce == 11_181_248          # trunk incl. conv biases
  assert _count(model.tce) == 787_137
  assert in_block_tce + _count(model.tce) == 2_079_199               # all 7 TCEs
  assert _count(model.lstformer) == 11_355_648
  assert _count(layer.attention) + _count(layer.attention_norm) == 1_050_112
  assert _count(layer.ffn) + _count(layer.ffn_norm) == 4_233_728
  assert _count(model.lstformer.temporal_conv) == 786_944
  assert _count(model.lstformer.norm) == 1_024
  assert _count(model.fc) == 3_591


def test_backbone_structure(model):
  backbone = model.backbone
  assert backbone.conv1.bias is None                                  # unbiased stem
  for block in backbone.layer1:
    assert block.input_gate is None                                   # no TCE in layer1
  gates = [b.input_gate for layer in (backbone.layer2, backbone.layer3, backbone.layer4)
           for b in layer]
  assert all(isinstance(g, TemporalChannelExcitation) for g in gates)
  assert [g.channels for g in gates] == [64, 128, 128, 256, 256, 512]
  for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
    for block in layer:
      assert block.conv1.bias is not None and block.conv2.bias is not None
      assert block.attention is None
  for layer in (backbone.layer2, backbone.layer3, backbone.layer4):
    assert layer[0].downsample.conv.bias is not None and layer[1].downsample is None


@pytest.fixture(scope="module")
def blocks(model):
  """The layer2 blocks (block 0 projects, block 1 is identity)."""
  return model.backbone.layer2[0], model.backbone.layer2[1]


def _zero_residual(block):
  """A copy whose residual branch outputs 0 (bn2 scale and bias zeroed)."""
  block = nnx.clone(block)
  block.bn2.scale[...] = jnp.zeros_like(block.bn2.scale[...])
  block.bn2.bias[...] = jnp.zeros_like(block.bn2.bias[...])
  return block


def test_projection_shortcut_sees_tce_output(blocks):
  block = _zero_residual(blocks[0])
  x = jnp.asarray(np.abs(np.random.default_rng(0).normal(size=(FRAMES, 6, 6, 64))), jnp.float32)
  out = block(x, train=False)
  gated = block.input_gate(x)
  assert not np.allclose(np.asarray(gated), np.asarray(x), atol=1e-3)
  np.testing.assert_allclose(np.asarray(out),
                             np.asarray(nnx.relu(block.downsample(gated, train=False))),
                             rtol=1e-5, atol=1e-5)


def test_identity_shortcut_carries_raw_input(blocks):
  block = _zero_residual(blocks[1])
  x = jnp.asarray(np.abs(np.random.default_rng(1).normal(size=(FRAMES, 3, 3, 128))), jnp.float32)
  assert not np.allclose(np.asarray(block.input_gate(x)), np.asarray(x), atol=1e-3)
  np.testing.assert_array_equal(np.asarray(block(x, train=False)), np.asarray(x))


def test_forward_shapes_and_clip_isolation(model):
  clips = np.random.default_rng(3).uniform(size=(2, FRAMES, 32, 32, 3)).astype(np.float32)
  forward = nnx.jit(lambda m, x: m(x, train=False))
  out = forward(model, jnp.asarray(clips))
  assert out["logits"].shape == (2, 7) and out["features"].shape == (2, 512)
  assert out["attention"].shape == (2, 8, FRAMES, FRAMES)
  np.testing.assert_allclose(np.asarray(out["logits"]),
                             np.asarray(model.fc(out["features"])), rtol=1e-5, atol=1e-5)
  changed = clips.copy()
  changed[1] = changed[1, ::-1]                     # reverse the frames of clip 1
  out_changed = forward(model, jnp.asarray(changed))
  np.testing.assert_allclose(np.asarray(out_changed["logits"][0]), np.asarray(out["logits"][0]),
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(out_changed["logits"][1]), np.asarray(out["logits"][1]))
  with pytest.raises(ValueError, match="num_frames"):
    model(jnp.zeros((1, 4, 32, 32, 3)), train=False)


def test_frame_average_is_mean_of_frame_features():
  model = _fill(nnx.eval_shape(lambda: frame_average.FrameAverage(7, rngs=nnx.Rngs(0))), 4)
  clips = np.random.default_rng(5).uniform(size=(2, 3, 32, 32, 3)).astype(np.float32)
  out = nnx.jit(lambda m, x: m(x, train=False))(model, jnp.asarray(clips))
  per_frame = nnx.jit(lambda m, x: m.backbone(x, train=False)["features"])(
      model, jnp.asarray(clips.reshape(6, 32, 32, 3)))
  np.testing.assert_allclose(np.asarray(out["features"]),
                             np.asarray(per_frame).reshape(2, 3, -1).mean(1), rtol=1e-5, atol=1e-5)
  assert out["logits"].shape == (2, 7)


def test_from_config_names_and_fields():
  config = lstpnet_config.get_config()
  assert config.model.name == "lstpnet" and config.model.num_frames == 16
  assert config.dataset.kind == "clip" and config.dataset.fold == 1
  model = nnx.eval_shape(lambda: lstpnet.from_config(config.model, 7, rngs=nnx.Rngs(0)))
  assert model.num_frames == 16 and _count(model) == 24_619_686
  base = lstpnet_config.get_config("synthetic_window,baseline")
  assert base.model.name == "frame_average"
  assert base.dataset.name == "synthetic_fer/clips_window"
  baseline = nnx.eval_shape(lambda: frame_average.from_config(base.model, 7, rngs=nnx.Rngs(0)))
  assert _count(baseline) == 11_176_512 + 3_591                     # torchvision trunk + fc


@pytest.mark.parametrize("arg, field, value", [
    ("fold=3", "dataset.fold", 3), ("ferv39k", "dataset.name", "ferv39k/official"),
    ("afew", "optimizer.learning_rate", 0.001), ("synthetic", "dataset.name", "synthetic_fer/clips"),
])
def test_config_variants(arg, field, value):
  config = lstpnet_config.get_config(arg)
  section, name = field.split(".")
  assert config[section][name] == value
  assert config.model.num_frames == config.input.num_frames
  assert config.best_metric == "war_plus_uar"           # the authors' epoch selection
  config.input.num_frames = 4                           # as --config.input.num_frames=4
  assert config.model.num_frames == 4


@pytest.mark.parametrize("arg", ["fold=6", "ferv39k,afew", "nofold"])
def test_config_rejects_bad_variants(arg):
  with pytest.raises(ValueError):
    lstpnet_config.get_config(arg)
