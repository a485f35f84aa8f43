"""The PyTorch side of the side-by-side benchmark: torchvision ResNets, same batch and optimizer.

`reference_spec(config, ...)` says what PyTorch runs for a ferjax config:
torchvision ResNet-`depth` on `[B, 3, H, W]` images for image models, and for
clip models the same ResNet over the `B*T` frames `[B*T, 3, H, W]`, pooled
features averaged over time, then a Linear layer (ferjax's `frame_average`
model). For `resnet` and `frame_average` that is the same architecture; for
the other models (LSTPNet, ST-SE, MSFE, AEA) only their ResNet backbone is
compared, and the spec says so.

The step: uint8 pixels on the device -> (x/255 - mean)/std -> forward ->
cross-entropy (the config's label smoothing) -> backward -> the config's
optimizer (SGD with momentum and L2 weight decay, Adam, AdamW; optional
global-norm clipping). Precision: float32 (TF32 allowed for convolutions and
matmuls on CUDA, as XLA's default precision does), or bfloat16 autocast; on
CUDA the model and batch are channels_last.

`measure_in_subprocess(spec)` runs it in a fresh Python process, so that the
two frameworks share neither allocator nor thread pools and the process's
max RSS is PyTorch's alone; torch is only imported there.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import ml_collections

SAME_ARCHITECTURE = ("resnet", "frame_average")


def reference_spec(config: ml_collections.ConfigDict, *, steps: int, warmup: int,
                   threads: int = 0) -> dict:
  """The PyTorch run that mirrors `config` (JSON-serialisable); `threads` 0 = torch's default."""
  model = config.model
  depth = int(model.depth)
  if depth not in (18, 34, 50, 101, 152):
    raise ValueError(f"--torch: no torchvision ResNet of depth {depth} (config.model.depth)")
  clip = config.dataset.kind == "clip"
  aea = "aea" in model and model.aea.get("enabled", False)
  same = model.name in SAME_ARCHITECTURE and not aea
  if clip:
    network = (f"torchvision ResNet-{depth} over B*T frames [B*T, 3, H, W], pooled features "
               "averaged over T, Linear")
  else:
    network = f"torchvision ResNet-{depth} on [B, 3, H, W]"
  if same:
    compared = f"same architecture: ferjax {model.name}-{depth} vs {network}"
  else:
    compared = (f"backbone only: ferjax {model.name}{' + AEA' if aea else ''} (full model) vs "
                f"{network} (the PyTorch side lacks {model.name}'s own layers, so the "
                "ratio understates ferjax's speed on equal work)")
  opt = config.optimizer
  if opt.name not in ("sgd", "adam", "adamw"):
    raise ValueError(f"--torch: config.optimizer.name {opt.name!r} has no PyTorch mirror")
  return {
      "kind": config.dataset.kind, "depth": depth, "same_architecture": same,
      "compared": compared, "num_classes": int(config.dataset.num_classes),
      "batch_size": int(config.batch_size), "image_size": int(config.input.image_size),
      "num_frames": int(config.input.num_frames) if clip else 1,
      "dtype": model.dtype, "mean": list(config.input.mean), "std": list(config.input.std),
      "label_smoothing": float(config.objective.get("label_smoothing", 0.0)),
      "optimizer": {k: opt[k] for k in ("name", "learning_rate", "momentum", "nesterov",
                                          "b1", "b2", "eps", "weight_decay",
                                          "grad_clip_norm")},
      "steps": steps, "warmup": warmup, "threads": threads, "seed": int(config.seed),
  }


def _build(spec: dict, torch, device):
  """(model as a callable on [B*T, 3, H, W] pixels, its parameters)."""
  import torchvision  # pylint: disable=g-import-not-at-top
  backbone = getattr(torchvision.models, f"resnet{spec['depth']}")(
      num_classes=spec["num_classes"])
  if spec["kind"] != "clip":
    return backbone.to(device)
  width = backbone.fc.in_features
  backbone.fc = torch.nn.Identity()
  head = torch.nn.Linear(width, spec["num_classes"])

  class FrameAverage(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.backbone, self.fc = backbone, head

    def forward(self, frames):
      features = self.backbone(frames)
      return self.fc(features.view(-1, spec["num_frames"], width).mean(dim=1))

  return FrameAverage().to(device)


def _optimizer(spec: dict, params, torch):
  opt = spec["optimizer"]
  if opt["name"] == "sgd":
    return torch.optim.SGD(params, lr=opt["learning_rate"], momentum=opt["momentum"],
                           nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])
  if opt["name"] == "adam":
    return torch.optim.Adam(params, lr=opt["learning_rate"], betas=(opt["b1"], opt["b2"]),
                            eps=opt["eps"], weight_decay=opt["weight_decay"])
  return torch.optim.AdamW(params, lr=opt["learning_rate"], betas=(opt["b1"], opt["b2"]),
                           eps=opt["eps"], weight_decay=opt["weight_decay"])


def measure(spec: dict) -> dict:
  """Times `spec['steps']` PyTorch train steps after `spec['warmup']`; median seconds."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top
  torch.manual_seed(spec["seed"])
  if spec["threads"]:
    torch.set_num_threads(spec["threads"])
  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  bf16 = spec["dtype"] == "bfloat16"
  if cuda:
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  layout = torch.channels_last if cuda else torch.contiguous_format
  model = _build(spec, torch, device).to(memory_format=layout)
  model.train()
  optimizer = _optimizer(spec, model.parameters(), torch)
  rows = spec["batch_size"] * spec["num_frames"]
  size = spec["image_size"]
  generator = torch.Generator().manual_seed(spec["seed"])
  pixels = torch.randint(0, 256, (rows, 3, size, size), dtype=torch.uint8,
                         generator=generator).to(device).contiguous(memory_format=layout)
  labels = torch.randint(0, spec["num_classes"], (spec["batch_size"],),
                         generator=generator).to(device)
  mean = torch.tensor(spec["mean"], device=device).view(1, 3, 1, 1)
  std = torch.tensor(spec["std"], device=device).view(1, 3, 1, 1)
  clip_norm = spec["optimizer"]["grad_clip_norm"]

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      logits = model((pixels.float() / 255.0 - mean) / std)
    loss = torch.nn.functional.cross_entropy(logits.float(), labels,
                                             label_smoothing=spec["label_smoothing"])
    loss.backward()
    if clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()

  def sync():
    if cuda:
      torch.cuda.synchronize()

  with flop_counter.FlopCounterMode(display=False) as counter:
    step()
  for _ in range(spec["warmup"]):
    step()
  sync()
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  times = []
  for _ in range(spec["steps"]):
    start = time.perf_counter()
    step()
    sync()
    times.append(time.perf_counter() - start)
  step_time = statistics.median(times)
  if cuda:
    memory = {"peak_bytes": torch.cuda.max_memory_allocated(),
              "source": "torch.cuda.max_memory_allocated"}
  else:
    memory = {"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "source": "process max RSS of the PyTorch process"}
  return {
      "device": torch.cuda.get_device_name() if cuda else "cpu",
      "torch_version": torch.__version__,
      "threads": torch.get_num_threads(),
      "precision": ("bfloat16 autocast" if bf16 else "float32 (TF32 allowed)" if cuda
                    else "float32") + (", channels_last" if cuda else ""),
      "compared": spec["compared"],
      "same_architecture": spec["same_architecture"],
      "steps": spec["steps"],
      "warmup": spec["warmup"],
      "step_time_s": step_time,
      "step_time_min_s": min(times),
      "examples_per_s": spec["batch_size"] / step_time,
      "flops_per_step": float(counter.get_total_flops()),
      "memory": memory,
  }


def measure_in_subprocess(spec: dict, *, timeout: float | None = None) -> dict:
  """`measure(spec)` in a fresh `python -m ferjax.bench.torch_reference` process."""
  with tempfile.TemporaryDirectory() as tmp:
    spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
    with open(spec_path, "w") as f:
      json.dump(spec, f)
    result = subprocess.run(
        [sys.executable, "-m", "ferjax.bench.torch_reference", spec_path, out_path],
        capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
      raise RuntimeError(f"the PyTorch benchmark process failed ({result.returncode}):\n"
                         f"{result.stderr[-3000:]}")
    with open(out_path) as f:
      return json.load(f)


if __name__ == "__main__":
  if len(sys.argv) != 3:
    raise SystemExit("usage: python -m ferjax.bench.torch_reference SPEC.json OUT.json")
  with open(sys.argv[1]) as spec_file:
    measured = measure(json.load(spec_file))
  with open(sys.argv[2], "w") as out_file:
    json.dump(measured, out_file)
