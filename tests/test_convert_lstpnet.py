"""Official LSTPNet checkpoint layout -> ferjax LSTPNet (ferjax.convert.torch_lstpnet).

The released checkpoints are not available offline, so the tests build one
with exactly the keys and shapes of the official model
(testdata/lstpnet_state_dict_keys.txt, listed from the official model), random
values, the `module.` prefix and the `model_state_dict` nesting, and check
where every tensor lands; TCE, the LSTformer and the whole network are also
compared with small PyTorch re-implementations written from the equations
of docs/methods/lstpnet.md, 'Model'.
"""

import ast
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convert_helpers import blank_model
from ferjax.convert import load_init
from ferjax.convert.__main__ import convert as convert_cli
from ferjax.convert.state import path_key
from ferjax.convert.torch_lstpnet import convert as convert_lstpnet
from ferjax.models.lstpnet import LSTPNet

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.torch

KEYS_FILE = os.path.join(os.path.dirname(__file__), "testdata", "lstpnet_state_dict_keys.txt")
T = "t_former.spatial_transformer."
B = "s_former.ir_back."
# Tied copies (keys file header): layers.l.0.* == TC.*, layers.l.1.* == norm.*.
TIED = {f"{T}layers.{l}.{i}.{leaf}": f"{T}{name}.{leaf}"
        for l in (0, 1) for i, name in ((0, "TC"), (1, "norm")) for leaf in ("weight", "bias")}
# Canonical class c is DFEW-order class DFEW_FOR_CANONICAL[c] (docs/datasets.md, 'DFEW':
# neutral=2, happy=0, sad=1, surprise=4, fear=6, disgust=5, anger=3).
DFEW_FOR_CANONICAL = [2, 0, 1, 4, 6, 5, 3]


def official_shapes() -> dict[str, tuple[int, ...]]:
  shapes = {}
  with open(KEYS_FILE) as f:
    for line in f:
      if line.strip() and not line.startswith("#"):
        key, shape = line.rstrip("\n").split("\t")[:2]
        shapes[key] = ast.literal_eval(shape)
  return shapes


def random_official_state(seed: int) -> dict[str, np.ndarray]:
  """Every official key with a random value of its shape (tied copies equal)."""
  rng = np.random.RandomState(seed)
  state = {}
  for key, shape in official_shapes().items():
    if key.endswith("num_batches_tracked"):
      value = np.array(1000, np.int64)
    elif key.endswith("running_var"):
      value = rng.uniform(0.5, 2.0, shape)
    elif key.endswith("running_mean"):
      value = rng.uniform(-0.5, 0.5, shape)
    elif len(shape) == 1 and key.endswith(".weight"):  # BN / LayerNorm scale
      value = rng.uniform(0.5, 1.5, shape)
    elif len(shape) == 1:
      value = rng.normal(0.0, 0.1, shape)
    else:
      value = rng.normal(0.0, 1.0, shape) / np.sqrt(np.prod(shape[1:]))
    state[key] = value.astype(np.float32) if value.dtype == np.float64 else value
  for copy, kept in TIED.items():
    state[copy] = state[kept].copy()
  return state


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[dict[str, np.ndarray], str]:
  """(state dict, path of a .pth laid out like the released checkpoints)."""
  state = random_official_state(0)
  path = str(tmp_path_factory.mktemp("lstpnet") / "best_val_acc_uar__epoch32.pth")
  torch.save({"epoch": 32, "model_state_dict": {f"module.{k}": torch.from_numpy(v)
                                                for k, v in state.items()}}, path)
  return state, path


@pytest.fixture(scope="module")
def loaded(official):
  """The checkpoint loaded strictly (DFEW class order) into a zeroed ferjax LSTPNet."""
  _, path = official
  model = blank_model(lambda rngs: LSTPNet(7, rngs=rngs))
  return model, load_init(model, path, partial=False, class_order="dfew")


def variables(model: nnx.Module) -> dict[str, np.ndarray]:
  return {path_key(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def test_every_variable_filled_from_its_key(official, loaded):
  state, _ = official
  model, report = loaded
  assert report.ok and report.target == "LSTPNet"
  counters = [k for k in state if k.endswith("num_batches_tracked")]
  assert len(state) == 226 and len(counters) == 20
  assert sorted(report.dropped) == sorted(counters + list(TIED))
  assert sorted(r.source for r in report.matched) == sorted(
      k for k in state if k not in TIED and k not in counters)
  assert sorted(r.target for r in report.matched) == sorted(variables(model))
  params = sum(v.size for k, v in variables(model).items()
               if not k.endswith(("/mean", "/var")))
  assert params == 24_619_686  # the official model's total for K=7


def test_tensors_land_transposed_where_they_belong(official, loaded):
  state, _ = official
  model, _ = loaded
  bb, tf = model.backbone, model.lstformer
  conv = state[B + "layer3.0.conv1.weight"]                       # (O, I, kh, kw)
  kernel = np.asarray(bb.layer3[0].conv1.kernel[...])             # (kh, kw, I, O)
  assert kernel[2, 0, 5, 7] == conv[7, 5, 2, 0] and kernel[1, 2, 100, 3] == conv[3, 100, 1, 2]
  checks = [
      (bb.layer3[0].conv1.bias, state[B + "layer3.0.conv1.bias"]),
      (bb.layer4[0].downsample.conv.bias, state[B + "layer4.0.downsample.0.bias"]),
      (bb.layer4[0].downsample.bn.var, state[B + "layer4.0.downsample.1.running_var"]),
      (bb.layer1[1].bn2.scale, state[B + "layer1.1.bn2.weight"]),
      (bb.bn1.mean, state[B + "bn1.running_mean"]),
      (model.tce.channel_conv2.bias, state["s_former.eca.eca_conv_2.0.bias"]),
      (tf.norm.scale, state[T + "norm.weight"]),
      (tf.temporal_conv.bias, state[T + "TC.bias"]),
      (tf.layers[1].attention_norm.scale, state[T + "layers.1.2.fn.norm.weight"]),
      (tf.layers[0].ffn_norm.bias, state[T + "layers.0.3.fn.norm.bias"]),
      (tf.layers[1].ffn.norm1.scale, state[T + "layers.1.3.fn.fn.linear1.2.weight"]),
      (tf.layers[0].ffn.norm2.scale, state[T + "layers.0.3.fn.fn.norm.weight"]),
      (tf.layers[0].ffn.norm_out.bias, state[T + "layers.0.3.fn.fn.linear2.1.bias"]),
      (tf.layers[1].ffn.depthwise_conv.bias, state[T + "layers.1.3.fn.fn.TC.bias"]),
      # Conv1d (O, I, k) -> (k, I, O); Linear (out, in) -> (in, out).
      (bb.layer2[0].input_gate.channel_conv1.kernel,
       np.einsum("oik->kio", state[B + "layer2.0.eca.eca_conv_1.0.weight"])),
      (bb.layer3[1].input_gate.temporal_conv.kernel,
       np.einsum("oik->kio", state[B + "layer3.1.eca.action_p2_conv1.weight"])),
      (model.tce.temporal_conv.kernel,
       np.einsum("oik->kio", state["s_former.eca.action_p2_conv1.weight"])),
      (tf.temporal_conv.kernel, np.einsum("oik->kio", state[T + "TC.weight"])),
      (tf.layers[1].ffn.depthwise_conv.kernel,
       np.einsum("oik->kio", state[T + "layers.1.3.fn.fn.TC.weight"])),
      (tf.layers[1].attention.to_out.kernel,
       np.einsum("oi->io", state[T + "layers.1.2.fn.fn.to_out.0.weight"])),
      (tf.layers[0].ffn.linear2.kernel,
       np.einsum("oi->io", state[T + "layers.0.3.fn.fn.linear2.0.weight"])),
  ]
  for variable, expected in checks:
    np.testing.assert_array_equal(variable[...], expected)
  assert tf.layers[1].ffn.depthwise_conv.kernel.shape == (3, 1, 4096)


def test_qkv_columns_follow_torch_chunk_and_heads(official, loaded):
  """q, k, v = chunk(x W_qkv^T, 3) and head h = columns h*64..h*64+63 of each."""
  state, _ = official
  model, _ = loaded
  x = np.random.RandomState(1).randn(2, 16, 512).astype(np.float32)
  torch_qkv = x @ state[T + "layers.0.2.fn.fn.to_qkv.weight"].T
  q, k, v = np.split(torch_qkv, 3, axis=-1)
  ferjax_qkv = np.asarray(model.lstformer.layers[0].attention.to_qkv(jnp.asarray(x)))
  ferjax_qkv = ferjax_qkv.reshape(2, 16, 3, 8, 64)  # the split Attention.__call__ uses
  for j, block in enumerate((q, k, v)):
    for h in (0, 5, 7):
      np.testing.assert_allclose(ferjax_qkv[:, :, j, h], block[..., h * 64:(h + 1) * 64],
                                 rtol=1e-5, atol=1e-5)


def test_fc_rows_permuted_to_canonical(official, loaded):
  state, _ = official
  model, _ = loaded
  features = np.random.RandomState(2).randn(3, 512).astype(np.float32)
  dfew_logits = features @ state["fc.weight"].T + state["fc.bias"]
  np.testing.assert_allclose(model.fc(jnp.asarray(features)),
                             dfew_logits[:, DFEW_FOR_CANONICAL], rtol=1e-5, atol=1e-5)
  canonical = convert_lstpnet(state, class_order="canonical").arrays
  np.testing.assert_array_equal(canonical["fc/kernel"][1], state["fc.weight"].T)
  np.testing.assert_array_equal(canonical["fc/bias"][1], state["fc.bias"])


def torch_tce(x: "torch.Tensor", state: dict, prefix: str, frames: int) -> "torch.Tensor":
  """TCE on frames `[B*T, C, H, W]` (torch layout), from the raw checkpoint tensors."""
  w1, b1 = state[prefix + "eca_conv_1.0.weight"], state[prefix + "eca_conv_1.0.bias"]
  wt = state[prefix + "action_p2_conv1.weight"]
  w2, b2 = state[prefix + "eca_conv_2.0.weight"], state[prefix + "eca_conv_2.0.bias"]
  pad = (w1.shape[-1] - 1) // 2
  n, c = x.shape[:2]
  clips, rd = n // frames, w1.shape[0]

  def logits(s):  # s [B*T, C] -> z4 [B*T, C]
    z1 = F.conv1d(s[:, None, :], w1, b1, padding=pad)              # [BT, rd, C]
    # A length-T sequence per (clip, r) with the C channel positions as features.
    z = z1.reshape(clips, frames, rd, c).permute(0, 2, 3, 1).reshape(clips * rd, c, frames)
    z3 = F.relu(F.conv1d(z, wt, padding=1))                         # [B*rd, C, T]
    z3 = z3.reshape(clips, rd, c, frames).permute(0, 3, 1, 2).reshape(n, rd, c)
    return F.conv1d(z3, w2, b2, padding=pad)[:, 0]

  gate = 2 * torch.sigmoid(logits(x.mean((2, 3))) + logits(x.amax((2, 3))))
  return x * gate[:, :, None, None]


def torch_lstformer(x: "torch.Tensor", state: dict) -> tuple["torch.Tensor", "torch.Tensor"]:
  """The LSTformer on tokens `[B, T, 512]`: 2 layers with the tied TC and LayerNorm."""
  def ln(h, name):
    return F.layer_norm(h, h.shape[-1:], state[name + ".weight"], state[name + ".bias"], 1e-5)

  def lin(h, name):
    return F.linear(h, state[name + ".weight"], state.get(name + ".bias"))

  def time_conv(h, name, groups=1):
    return F.conv1d(h.transpose(1, 2), state[name + ".weight"], state[name + ".bias"],
                    padding=1, groups=groups).transpose(1, 2)

  b, t, _ = x.shape
  for l in range(2):
    p = f"{T}layers.{l}."
    x = ln(x + time_conv(x, T + "TC"), T + "norm")
    q, k, v = lin(ln(x, p + "2.fn.norm"), p + "2.fn.fn.to_qkv").chunk(3, dim=-1)
    q, k, v = (a.reshape(b, t, 8, 64).transpose(1, 2) for a in (q, k, v))
    attention = torch.softmax(q @ k.transpose(-1, -2) * 64 ** -0.5, dim=-1)
    out = (attention @ v).transpose(1, 2).reshape(b, t, 512)
    x = x + lin(out, p + "2.fn.fn.to_out.0")
    f = p + "3.fn.fn."
    h = ln(F.gelu(lin(ln(x, p + "3.fn.norm"), f + "linear1.0")), f + "linear1.2")
    h = ln(F.gelu(h + time_conv(h, f + "TC", groups=4096)), f + "norm")
    x = x + ln(lin(h, f + "linear2.0"), f + "linear2.1")
  return x, attention


def torch_lstpnet(clips: "torch.Tensor", state: dict) -> "torch.Tensor":
  """The whole network, eval mode: clips `[B, T, 3, H, W]` -> DFEW-order logits."""
  def conv(h, name, stride=1, pad=0):
    return F.conv2d(h, state[name + ".weight"], state.get(name + ".bias"), stride, pad)

  def bn(h, name):
    return F.batch_norm(h, state[name + ".running_mean"], state[name + ".running_var"],
                        state[name + ".weight"], state[name + ".bias"], False, 0.0, 1e-5)

  b, frames = clips.shape[:2]
  x = clips.reshape(b * frames, *clips.shape[2:])
  x = F.max_pool2d(F.relu(bn(conv(x, B + "conv1", 2, 3), B + "bn1")), 3, 2, 1)
  for stage in (1, 2, 3, 4):
    for block in (0, 1):
      p = f"{B}layer{stage}.{block}."
      stride = 2 if stage > 1 and block == 0 else 1
      gated = torch_tce(x, state, p + "eca.", frames) if stage > 1 else x
      out = F.relu(bn(conv(gated, p + "conv1", stride, 1), p + "bn1"))
      out = bn(conv(out, p + "conv2", 1, 1), p + "bn2")
      shortcut = x
      if p + "downsample.0.weight" in state:
        shortcut = bn(conv(gated, p + "downsample.0", stride), p + "downsample.1")
      x = F.relu(out + shortcut)
  x = torch_tce(x, state, "s_former.eca.", frames)
  tokens, _ = torch_lstformer(x.mean((2, 3)).reshape(b, frames, -1), state)
  return F.linear(tokens.mean(1), state["fc.weight"], state["fc.bias"])


def test_tce_matches_torch_reference(official, loaded):
  state, _ = official
  model, _ = loaded
  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  rng = np.random.RandomState(3)
  for module, prefix, channels in ((model.backbone.layer2[0].input_gate, B + "layer2.0.eca.", 64),
                                   (model.tce, "s_former.eca.", 512)):
    x = rng.randn(2 * 16, 3, 3, channels).astype(np.float32)          # 2 clips of 16 frames
    expected = torch_tce(torch.from_numpy(x.transpose(0, 3, 1, 2)), tensors, prefix, 16)
    np.testing.assert_allclose(module(jnp.asarray(x)), expected.numpy().transpose(0, 2, 3, 1),
                               rtol=1e-4, atol=1e-4)


def test_lstformer_matches_torch_reference(official, loaded):
  state, _ = official
  model, _ = loaded
  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  x = np.random.RandomState(4).randn(2, 16, 512).astype(np.float32)
  expected, attention = torch_lstformer(torch.from_numpy(x), tensors)
  out, ferjax_attention = model.lstformer(jnp.asarray(x))
  np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ferjax_attention, attention.numpy(), rtol=1e-4, atol=1e-5)


def test_whole_network_matches_torch_reference(official, loaded):
  """Converted LSTPNet logits (canonical order) = reference logits re-indexed."""
  state, _ = official
  model, _ = loaded
  tensors = {k: torch.from_numpy(v) for k, v in state.items()}
  clips = np.random.RandomState(5).rand(1, 16, 32, 32, 3).astype(np.float32)
  with torch.no_grad():
    expected = torch_lstpnet(torch.from_numpy(clips.transpose(0, 1, 4, 2, 3)), tensors).numpy()
  logits = nnx.jit(lambda m, x: m(x, train=False)["logits"])(model, jnp.asarray(clips))
  np.testing.assert_allclose(logits, expected[:, DFEW_FOR_CANONICAL], rtol=1e-4, atol=1e-4)


def test_round_trip_and_errors(tmp_path, official, loaded):
  state, path = official
  model, _ = loaded
  dst = str(tmp_path / "lstpnet_dfew")
  convert_cli("lstpnet", path, dst, num_classes=None, class_order="dfew", partial=False,
              verbose=False)
  fresh = blank_model(lambda rngs: LSTPNet(7, rngs=rngs))
  assert load_init(fresh, dst, partial=False).ok
  expected = variables(model)
  for key, value in variables(fresh).items():
    np.testing.assert_array_equal(value, expected[key], err_msg=key)

  with pytest.raises(ValueError, match="--arch=lstpnet needs --class_order"):
    convert_cli("lstpnet", path, str(tmp_path / "x"), num_classes=None, class_order=None,
                partial=False, verbose=False)
  with pytest.raises(ValueError, match="class order of an LSTPNet checkpoint is not in the file"):
    load_init(fresh, path, partial=False)
  broken = dict(state)
  broken[T + "layers.1.0.weight"] = state[T + "TC.weight"] + 1.0
  with pytest.raises(ValueError, match=r"layers\.1\.0\.weight should be a tied copy of "
                                       r"t_former\.spatial_transformer\.TC\.weight"):
    convert_lstpnet(broken, class_order="dfew")
  with pytest.raises(ValueError, match="class_order must be one of"):
    convert_lstpnet(state, class_order="ferv39k")
