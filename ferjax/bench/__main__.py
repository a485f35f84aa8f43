r"""Benchmarks ferjax's train step (and optionally PyTorch's and the input pipeline).

  python -m ferjax.bench --model=resnet50 --batch_size=16 --image_size=112 --steps=5
  python -m ferjax.bench --model=resnet50 --batch_size=256 --image_size=224 \
      --dtype=bfloat16 --torch --input --workers=4,8,16 --json_out=/tmp/r50.json
  python -m ferjax.bench --config=lstpnet:synthetic --torch

Installed as `ferjax-bench`. Prints a table; `--json_out` writes the same
figures. With `--torch`, PyTorch runs first in its own process, so that JAX's
device memory (preallocated on GPUs) does not limit it.
"""

import datetime
import importlib.util
import json
import os
import sys

from absl import flags

from ferjax import cli, errors
from ferjax.bench import models, report

FLAGS = flags.FLAGS
_MODEL = flags.DEFINE_enum("model", None, list(models.MODELS),
                           "Model shortcut (a :synthetic config of ferjax/configs/).")
cli.define_config_flag("Config file or packaged config name with :ARG, instead of --model.",
                       lock_config=False)
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch size (default: the config's).")
_SIZE = flags.DEFINE_integer("image_size", None, "Input height = width (default: the config's).")
_FRAMES = flags.DEFINE_integer("num_frames", None, "Frames per clip, clip models only.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"],
                           "Computation dtype (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed train steps (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed train steps after compilation.")
_TORCH = flags.DEFINE_bool("torch", False, "Also run the PyTorch reference and the ratio.")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "PyTorch CPU threads (0 = its default, one per core). On a busy "
    "host, 1 avoids OpenMP threads stalling on each other.")
_INPUT = flags.DEFINE_bool("input", False, "Also time the Grain input pipeline.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Grain worker counts for --input.")
_INPUT_BATCHES = flags.DEFINE_integer(
    "input_batches", 32, "Host batches per producing process (worker, or the main process).")
_DATASET = flags.DEFINE_string("dataset", None, "Override config.dataset.name.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Override config.dataset.data_dir.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write the figures to this JSON file.")


def _config():
  """The config under test, with the benchmark's overrides applied."""
  if (_MODEL.value is None) == (FLAGS.config is None):
    raise ValueError("give exactly one of --model and --config")
  if _MODEL.value:
    config, name = models.shortcut_config(_MODEL.value)
  else:
    config, name = FLAGS.config, FLAGS["config"].config_filename
  config = models.apply_overrides(
      config, batch_size=_BATCH.value, image_size=_SIZE.value, num_frames=_FRAMES.value,
      dtype=_DTYPE.value, dataset=_DATASET.value, data_dir=_DATA_DIR.value)
  return config, name


def _workers() -> list[int]:
  try:
    return [int(w) for w in _WORKERS.value]
  except ValueError:
    raise ValueError(f"--workers must be integers, got {','.join(_WORKERS.value)}") from None


def measure() -> dict:
  """Runs the requested measurements; returns the results dict (printed and JSON'd)."""
  # The ML stack loads here, not at import: --help answers at once.
  import jax  # pylint: disable=g-import-not-at-top
  from ferjax.bench import input_pipeline, torch_reference, train_step  # pylint: disable=g-import-not-at-top
  load_start = os.getloadavg()[0]
  config, config_name = _config()
  clip = config.dataset.kind == "clip"
  workers = _workers() if _INPUT.value else []
  results = {
      "date": datetime.date.today().isoformat(),
      "command": " ".join(["python -m ferjax.bench", *sys.argv[1:]]),
      "setup": {
          "config": config_name, "model": config.model.name, "depth": config.model.depth,
          "kind": config.dataset.kind, "unit": "clips" if clip else "images",
          "batch_size": config.batch_size, "image_size": config.input.image_size,
          "num_frames": config.input.num_frames if clip else None,
          "dtype": config.model.dtype, "optimizer": config.optimizer.name,
          "objective": config.objective.name, "dataset": config.dataset.name,
      },
  }
  if _TORCH.value:
    if not (importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision")):
      raise ValueError("--torch needs torch and torchvision: pip install -e '.[torch]'")
    spec = torch_reference.reference_spec(config, steps=_STEPS.value, warmup=_WARMUP.value,
                                          threads=_TORCH_THREADS.value)
    results["torch"] = torch_reference.measure_in_subprocess(spec)

  # JAX's backend (and its GPU memory preallocation) starts here, after PyTorch exited.
  results["ferjax"] = train_step.measure(config, steps=_STEPS.value, warmup=_WARMUP.value)
  results["device"] = {"platform": jax.devices()[0].platform,
                       "device_kind": jax.devices()[0].device_kind,
                       "count": jax.device_count(), "process_count": jax.process_count()}
  rate = results["ferjax"]["examples_per_s"]
  if _TORCH.value:
    results["ratio_ferjax_over_torch"] = rate / results["torch"]["examples_per_s"]
  if workers:
    results["input"] = []
    for count in workers:
      row = input_pipeline.measure(config, count, batches=_INPUT_BATCHES.value)
      row["ratio_to_train_step"] = row["examples_per_s"] / rate
      results["input"].append(row)
  results["host"] = {"cpus": os.cpu_count(), "load_average_start": load_start,
                     "load_average_end": os.getloadavg()[0]}
  return results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    errors.exit_with(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    results = measure()
  except (ValueError, errors.UserError) as e:
    print(f"ferjax.bench: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(report.format_report(results))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(results, f, indent=2)


def run() -> None:
  """Console entry point `ferjax-bench`."""
  cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
  run()
