"""torchvision ResNet checkpoints -> ferjax ResNet (ferjax.convert), checked against torch."""

import argparse
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import stse_resnet50
from convert_helpers import blank_model
from ferjax.convert import LoadError, load_init
from ferjax.convert.__main__ import convert as convert_cli
from ferjax.convert.state import match
from ferjax.convert.torch_file import read_state_dict
from ferjax.convert.torch_resnet import convert as convert_resnet
from ferjax.models import stse
from ferjax.models.resnet import ResNet

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchvision_resnet(depth: int, num_classes: int, seed: int) -> "torch.nn.Module":
  """A random torchvision ResNet in eval mode with random BN affine and running stats.

  The default BN state (scale 1, shift 0, mean 0, var 1) would hide a swapped
  or dropped BN tensor, so all four are randomised.
  """
  torch.manual_seed(seed)
  model = getattr(torchvision.models, f"resnet{depth}")(num_classes=num_classes)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
  return model.eval()


def torch_outputs(model: "torch.nn.Module", images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(logits, pooled features) of a torchvision ResNet for NHWC `images`."""
  features = {}
  hook = model.fc.register_forward_hook(lambda m, inputs, out: features.update(x=inputs[0]))
  with torch.no_grad():
    logits = model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  hook.remove()
  return logits.numpy(), features["x"].numpy()


@nnx.jit
def ferjax_outputs(model: nnx.Module, images: jnp.ndarray) -> dict:
  return model(images, train=False)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
  return np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple["torch.nn.Module", str]:
  model = torchvision_resnet(18, 7, seed=1)
  path = str(tmp_path_factory.mktemp("r18") / "resnet18.pth")
  torch.save(model.state_dict(), path)
  return model, path


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> tuple["torch.nn.Module", str]:
  model = torchvision_resnet(50, 7, seed=2)
  path = str(tmp_path_factory.mktemp("r50") / "resnet50.pth")
  torch.save(model.state_dict(), path)
  return model, path


def test_key_mapping_by_hand():
  """Leaf renames, downsample.0/1 -> conv/bn, and explicit transposes on tiny arrays."""
  rng = np.random.RandomState(0)
  conv = rng.randn(4, 3, 2, 2).astype(np.float32)
  fc = rng.randn(5, 4).astype(np.float32)
  converted = convert_resnet({
      "layer2.0.downsample.0.weight": conv,
      "layer2.0.downsample.1.running_var": np.arange(4.0),
      "layer2.0.downsample.1.num_batches_tracked": np.array(3),
      "layer1.1.bn2.weight": np.arange(4.0),
      "fc.weight": fc,
      "feature.weight": fc,
  })
  kernel = converted.arrays["layer2/0/downsample/conv/kernel"][1]
  assert kernel.shape == (2, 2, 3, 4)
  assert kernel[1, 0, 2, 3] == conv[3, 2, 1, 0]
  assert converted.arrays["layer2/0/downsample/bn/var"][0] == "layer2.0.downsample.1.running_var"
  np.testing.assert_array_equal(converted.arrays["layer1/1/bn2/scale"][1], np.arange(4.0))
  np.testing.assert_array_equal(converted.arrays["fc/kernel"][1], fc.T)
  assert converted.unexpected == {"feature.weight": (5, 4)}
  assert converted.dropped == ["layer2.0.downsample.1.num_batches_tracked"]
  with pytest.raises(ValueError, match="conv1.weight: a Conv2d weight"):
    convert_resnet({"conv1.weight": fc})


@pytest.mark.parametrize("depth", [18, 50])
def test_logits_match_torchvision(depth, images, resnet18_file, resnet50_file):
  torch_model, path = resnet18_file if depth == 18 else resnet50_file
  model = blank_model(lambda rngs: ResNet(depth, 7, rngs=rngs))
  report = load_init(model, path, partial=False)
  num_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in torch_model.modules())
  assert report.ok and len(report.matched) == len(torch_model.state_dict()) - num_bn
  assert len(report.dropped) == num_bn  # the num_batches_tracked counters
  assert len({row.target for row in report.matched}) == len(report.matched)
  logits, features = torch_outputs(torch_model, images)
  outputs = ferjax_outputs(model, jnp.asarray(images))
  np.testing.assert_allclose(outputs["features"], features, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-4, atol=1e-4)


def test_stse_disabled_equals_converted_torchvision_resnet50(images, resnet50_file):
  """ST-SE with `stse.enabled=False` is torchvision's ResNet-50."""
  torch_model, path = resnet50_file
  model_config = stse_resnet50.get_config("plain").model
  assert not model_config.stse.enabled and model_config.depth == 50
  model = blank_model(lambda rngs: stse.from_config(model_config, 7, rngs=rngs))
  assert load_init(model, path, partial=False).ok
  logits, _ = torch_outputs(torch_model, images)
  np.testing.assert_allclose(ferjax_outputs(model, jnp.asarray(images))["logits"], logits,
                             rtol=1e-4, atol=1e-4)
  # With ST-SE on, the same file fills the whole trunk; only the ST-SE blocks are left.
  stse_config = stse_resnet50.get_config().model
  abstract = nnx.eval_shape(lambda: stse.from_config(stse_config, 7, rngs=nnx.Rngs(0)))
  report = match(abstract, convert_resnet(read_state_dict(path)), source=path, partial=True)
  assert not report.skipped and not report.unexpected
  assert len(report.matched) == len(torch_model.state_dict()) - len(report.dropped)
  assert report.missing and all("/attention/" in row.target for row in report.missing)


def test_wrapped_checkpoint_loads_backbone_partially(tmp_path, images):
  """`module.` prefixes, a nested state_dict, extra keys/objects, a 1000-class head."""
  torch_model = torchvision_resnet(18, 1000, seed=3)
  state = {f"module.{k}": v for k, v in torch_model.state_dict().items()}
  state["module.feature.weight"] = torch.zeros(128, 512)
  path = str(tmp_path / "msceleb_like.pth")
  torch.save({"epoch": 40, "best_acc": np.float64(0.9), "args": argparse.Namespace(lr=0.1),
              "state_dict": state}, path)
  model = blank_model(lambda rngs: ResNet(18, 7, rngs=rngs))

  with pytest.raises(LoadError, match=r"2 skipped for their shape, e\.g\. fc\.weight") as error:
    load_init(model, path, partial=False)
  assert not np.any(np.asarray(model.conv1.kernel[...]))  # strict failure changes nothing
  assert "\n" not in str(error.value)

  report = load_init(model, path, partial=True)
  assert [(r.source, r.target) for r in report.skipped] == [
      ("fc.weight", "fc/kernel"), ("fc.bias", "fc/bias")]
  assert report.skipped[0].source_shape == (512, 1000)
  assert report.skipped[0].target_shape == (512, 7)
  assert [r.source for r in report.unexpected] == ["feature.weight"]
  assert not report.missing and len(report.matched) == 100
  table = str(report)
  assert "skipped" in table and "fc.weight" in table and "(512, 1000)" in table
  assert not np.any(np.asarray(model.fc.kernel[...]))  # the 7-class head kept its init
  np.testing.assert_array_equal(
      model.layer3[0].downsample.conv.kernel[...],
      torch_model.layer3[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(model.layer4[1].bn2.mean[...],
                                torch_model.layer4[1].bn2.running_mean.numpy())
  _, features = torch_outputs(torch_model, images)
  np.testing.assert_allclose(ferjax_outputs(model, jnp.asarray(images))["features"], features,
                             rtol=1e-4, atol=1e-4)


class TwoHeads(nnx.Module):
  """A model whose ResNet sits at `backbone`, like MSFE and LSTPNet, with a dropout RNG."""

  def __init__(self, rngs: nnx.Rngs):
    self.backbone = ResNet(18, None, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)  # its RNG state is not a weight to load
    self.head = nnx.Linear(512, 3, rngs=rngs)


def test_round_trip_through_converted_checkpoint(tmp_path, images, resnet18_file):
  torch_model, path = resnet18_file
  dst = str(tmp_path / "converted")
  result = subprocess.run([sys.executable, "-m", "ferjax.convert", "--arch=resnet18",
                           f"--src={path}", f"--dst={dst}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "102 matched" in result.stdout and f"saved 102 arrays to {dst}" in result.stdout

  model = blank_model(lambda rngs: ResNet(18, 7, rngs=rngs))
  report = load_init(model, dst, partial=False)
  assert report.ok and report.source == dst
  logits, _ = torch_outputs(torch_model, images)
  np.testing.assert_allclose(ferjax_outputs(model, jnp.asarray(images))["logits"], logits,
                             rtol=1e-4, atol=1e-4)

  wrapped = blank_model(TwoHeads)
  report = load_init(wrapped, dst, partial=True)
  assert report.target == "TwoHeads.backbone"
  assert len(report.matched) == 100
  assert sorted(r.target for r in report.unexpected) == ["backbone/fc/bias", "backbone/fc/kernel"]
  assert [r.target for r in report.missing] == ["head/bias", "head/kernel"]
  np.testing.assert_array_equal(wrapped.backbone.conv1.kernel[...], model.conv1.kernel[...])

  with pytest.raises(ValueError, match="already exists"):
    convert_cli("resnet18", path, dst, num_classes=None, class_order=None, partial=False,
                verbose=False)


def test_cli_errors(tmp_path, resnet18_file):
  _, path = resnet18_file
  kwargs = dict(num_classes=None, class_order=None, partial=False, verbose=False)
  with pytest.raises(ValueError, match="holds a resnet checkpoint, not --arch=lstpnet"):
    convert_cli("lstpnet", path, str(tmp_path / "a"), **kwargs)
  with pytest.raises(ValueError, match=r"165 missing.*rerun with --partial"):
    convert_cli("resnet50", path, str(tmp_path / "b"), **kwargs)
  with pytest.raises(ValueError, match="--class_order applies to --arch=lstpnet only"):
    convert_cli("resnet18", path, str(tmp_path / "c"), **{**kwargs, "class_order": "dfew"})
  assert not os.listdir(tmp_path)
  result = subprocess.run([sys.executable, "-m", "ferjax.convert", "--arch=resnet18",
                           "--src=/nonexistent/r18.pth", f"--dst={tmp_path / 'd'}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == ("ferjax: error: /nonexistent/r18.pth: "
                                                    "no such file")


def test_bad_files(tmp_path, monkeypatch, resnet18_file):
  _, path = resnet18_file
  model = blank_model(lambda rngs: ResNet(18, 7, rngs=rngs))
  with pytest.raises(FileNotFoundError, match="missing.pth: no such file"):
    load_init(model, str(tmp_path / "missing.pth"), partial=True)
  truncated = tmp_path / "truncated.pth"
  with open(path, "rb") as f:
    truncated.write_bytes(f.read(4096))
  with pytest.raises(ValueError, match="truncated.pth: cannot read as PyTorch weights"):
    load_init(model, str(truncated), partial=True)
  cases = {"list.pth": [torch.ones(2)], "scalars.pth": {"epoch": 3, "lr": 0.1},
           "module.pth": torch.nn.Linear(2, 2),
           "mixed.pth": {"conv1.weight": torch.ones(2), "note": "hi"}}
  messages = {"list.pth": "not a state dict but a pickled list",
              "scalars.pth": "not a state dict: a dict with keys",
              "module.pth": "not a state dict but a pickled torch.nn.modules.linear.Linear",
              "mixed.pth": "state dict entry 'note' is a str, not a tensor"}
  for name, obj in cases.items():
    torch.save(obj, str(tmp_path / name))
    with pytest.raises(ValueError, match=messages[name]):
      load_init(model, str(tmp_path / name), partial=True)
  with pytest.raises(ValueError, match="not a converted ferjax checkpoint"):
    load_init(model, str(tmp_path), partial=True)
  with pytest.raises(ValueError, match="exactly one ResNet module; TwoResNets has 2"):
    load_init(blank_model(TwoResNets), path, partial=True)
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match=r"resnet18.pth is a PyTorch file and reading it needs"):
    load_init(model, path, partial=True)


class TwoResNets(nnx.Module):

  def __init__(self, rngs: nnx.Rngs):
    self.a = ResNet(18, None, rngs=rngs)
    self.b = ResNet(18, None, rngs=rngs)
