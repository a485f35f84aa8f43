"""Throughput of ferjax's real train step on a device-resident synthetic batch.

The step is `ferjax.train.Experiment`'s: `make_train_step` with the config's
model, objective and optimizer, jitted with the data-parallel shardings and
state donation used in training. The batch is random pixels and labels built
once on the device, so input loading is not measured here (see
`input_pipeline`).
"""

import resource
import tempfile
import time

import jax
import ml_collections
import numpy as np

from ferjax import sharding, train
from ferjax import peaks


def synthetic_batch(experiment: train.Experiment, batch_size: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """A host batch with the pipeline's keys, dtypes and shapes and random content.

  `image` `[B, S, S, 3]` or `frames` `[B, T, S, S, 3]` uint8, `label` int32 in
  [0, K), `mask` all True, `index` int32 (distinct positions of the split), and
  the config's metadata fields copied from the split's first record.
  """
  config = experiment.config
  size = config.input.image_size
  rng = np.random.default_rng(seed)
  if config.dataset.kind == "clip":
    key, shape = "frames", (batch_size, config.input.num_frames, size, size, 3)
  else:
    key, shape = "image", (batch_size, size, size, 3)
  split = experiment.train_split
  batch = {
      key: rng.integers(0, 256, shape, dtype=np.uint8),
      "label": rng.integers(0, experiment.num_classes, (batch_size,), dtype=np.int32),
      "mask": np.ones((batch_size,), bool),
      "index": (np.arange(batch_size) % split.num_records).astype(np.int32),
  }
  _, record = split.record(0)
  for name in config.dataset.metadata:
    value = np.asarray(record[name])
    batch[name] = np.broadcast_to(value, (batch_size, *value.shape)).copy()
  return batch


def timed_steps(step_fn, state, batch, *, warmup: int, steps: int):
  """Runs `warmup` untimed then `steps` timed calls; returns (state, seconds per step)."""
  for _ in range(warmup):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return state, np.asarray(times)


def device_memory() -> dict:
  """Peak memory: the allocator's peak on accelerators, the process's max RSS on CPU."""
  stats = [d.memory_stats() for d in jax.local_devices()]
  if all(s and "peak_bytes_in_use" in s for s in stats):
    return {"peak_bytes": max(s["peak_bytes_in_use"] for s in stats),
            "source": "device allocator peak_bytes_in_use (max over local devices)"}
  return {"peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "source": "process max RSS: no device memory stats on this platform; includes "
                    "the Python, TensorFlow and JAX runtimes"}


def measure(config: ml_collections.ConfigDict, *, steps: int, warmup: int) -> dict:
  """Compiles and times the train step for `config` (global batch `config.batch_size`).

  Returns compile times, per-step times (median, min), examples/s from the
  median, XLA's FLOPs per step (cost analysis of the compiled step, per device
  and total), achieved FLOP/s, MFU where the device's peak is known, peak
  memory and XLA's buffer sizes.
  """
  if steps < 1 or warmup < 0:
    raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {steps}, {warmup}")
  with tempfile.TemporaryDirectory() as workdir:
    experiment = train.Experiment(config, workdir)
  batch_size = config.batch_size
  batch = sharding.to_global_batch(synthetic_batch(experiment, batch_size, config.seed),
                                   experiment.mesh)
  start = time.perf_counter()
  lowered = experiment.train_step.lower(experiment.state, batch)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()
  _, times = timed_steps(compiled, experiment.state, batch, warmup=warmup, steps=steps)
  memory = device_memory()

  step_time = float(np.median(times))
  num_devices = jax.device_count()
  flops = float(compiled.cost_analysis().get("flops", 0.0)) or None
  device_kind = jax.devices()[0].device_kind
  peak = peaks.peak_flops(device_kind, config.model.dtype)
  buffers = compiled.memory_analysis()
  result = {
      "trace_lower_s": lowered_at - start,
      "compile_s": compiled_at - lowered_at,
      "steps": steps,
      "warmup": warmup,
      "step_time_s": step_time,
      "step_time_min_s": float(np.min(times)),
      "examples_per_s": batch_size / step_time,
      "flops_per_step_per_device": flops,
      "flops_per_step": flops * num_devices if flops else None,
      "achieved_flops_per_s": flops * num_devices / step_time if flops else None,
      "peak_flops_per_device": peak,
      "mfu": flops / step_time / peak if flops and peak else None,
      "memory": memory,
      "xla_buffers": None if buffers is None else {
          "argument_bytes": buffers.argument_size_in_bytes,
          "output_bytes": buffers.output_size_in_bytes,
          "alias_bytes": buffers.alias_size_in_bytes,
          "temp_bytes": buffers.temp_size_in_bytes,
      },
  }
  if config.dataset.kind == "clip":
    result["frames_per_s"] = result["examples_per_s"] * config.input.num_frames
  return result
