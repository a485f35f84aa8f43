"""Ahead-of-time compilation of the train and eval steps for a TPU slice or GPU node.

The steps are built with abstract shapes (`nnx.eval_shape`, no weights, no
dataset) exactly as `train.Experiment` builds them, lowered with the
shardings training uses over a mesh of the target's compile-only devices
(`make_target`) and compiled by the target's own compiler; `report_for` rates
the result: per-device memory, FLOPs and bytes per step, every collective
(`collectives`) and a roofline throughput. `ferjax.aot` is the command.
"""

import dataclasses
import math
import os
import re
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import topologies

from ferjax import ema as ema_lib, errors, evaluate as evaluate_lib, model_inputs, optim
from ferjax import sharding, train
from ferjax import peaks
from ferjax.data import pipeline
from ferjax.models import registry as model_registry
from ferjax.objectives import registry as objective_registry


# Train split sizes of the real datasets (docs/datasets.md), keyed by TFDS name
# without config; DFEW: the largest fold's train part.
TRAIN_SIZES = {"dfew": 9361, "rafdb": 12271, "affectnet": 287651, "ferplus": 25057,
               "sfew": 958, "ferv39k": 27831, "afew": 773}
GPUS_PER_HOST = 8
# GPU facts XLA's compile-only GPU client needs (NVIDIA data sheets / CUDA device
# queries): compute capability, SM count, memory (bytes, bandwidth from peaks).
_GPUS = {
    "h100": ("NVIDIA H100 80GB HBM3", (9, 0), 132, 50 * 2**20),
    "h200": ("NVIDIA H200", (9, 0), 132, 50 * 2**20),
    "a100": ("NVIDIA A100-SXM4-80GB", (8, 0), 108, 40 * 2**20),
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")


@dataclasses.dataclass(frozen=True)
class Target:
  """Compile-only devices of one target and their per-device peaks."""
  name: str
  platform: str            # "tpu" | "cuda"
  devices: tuple
  peak: peaks.Peak

  @property
  def hosts(self) -> int:
    return len({d.process_index for d in self.devices})


def _gpu_target_config(gpu: str) -> str:
  """A GpuTargetConfig text proto (XLA's description of a GPU it compiles for)."""
  name, (major, minor), sms, l2_bytes = _GPUS[gpu]
  peak = peaks.lookup(name)
  return (
      "gpu_device_info {\n"
      "  threads_per_block_limit: 1024 threads_per_warp: 32\n"
      "  shared_memory_per_block: 49152 shared_memory_per_block_optin: 232448\n"
      "  shared_memory_per_core: 233472 threads_per_core_limit: 2048\n"
      f"  core_count: {sms} fpus_per_core: 128\n"
      "  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535\n"
      f"  memory_bandwidth: {int(peak.hbm_bandwidth)} l2_cache_size: {l2_bytes}\n"
      f"  clock_rate_ghz: 1.98 device_memory_size: {int(peak.hbm_bytes)}\n"
      f"  cuda_compute_capability {{ major: {major} minor: {minor} }}\n"
      "  registers_per_core_limit: 65536 registers_per_block_limit: 65536\n"
      "}\n"
      'platform_name: "CUDA"\n'
      "dnn_version_info { major: 9 minor: 8 }\n"
      f'device_description_str: "{name}"\n')


def make_target(name: str, num_slices: int = 1) -> Target:
  """Compile-only devices for `name` ('v5e:4x4', 'h100x8', ...) times `num_slices`."""
  tpu = re.fullmatch(r"(v4|v5e|v5p|v6e):\d+(x\d+)+", name)
  gpu = re.fullmatch(r"(h100|h200|a100)x(\d+)", name)
  try:
    if tpu:
      # No TPU here: skip libtpu's metadata-server queries, and let concurrent compiles
      # on one host load libtpu at once (it otherwise takes a host-wide lock).
      os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
      os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
      # v4 defaults to one compile-only device per TensorCore (2 per chip); a real v4 slice
      # runs in megacore mode, one JAX device per chip, as v5p does by default.
      options = {"chip_config_name": "megacore"} if name.startswith("v4:") else {}
      devices = topologies.get_topology_desc(topology_name=name, platform="tpu",
                                             num_slices=num_slices, **options).devices
      platform = "tpu"
    elif gpu and int(gpu[2]) % GPUS_PER_HOST in (0, int(gpu[2])):
      count = int(gpu[2])
      per_host = min(count, GPUS_PER_HOST)
      topology = f"{num_slices}x{count // per_host}x{per_host}"
      devices = topologies.get_topology_desc(
          platform="cuda", topology=topology, target_config=_gpu_target_config(gpu[1])).devices
      platform = "cuda"
    else:
      raise errors.UserError(f"--target={name} is not v4|v5e|v5p|v6e:AxB[xC] or "
                             f"h100|h200|a100xN (N <= 8 or a multiple of 8)")
  except (RuntimeError, ValueError, NotImplementedError) as e:
    plugin = "jax[tpu] (libtpu)" if tpu else "jax-cuda12-plugin"
    raise errors.UserError(f"--target={name}: no compile-only devices ({str(e).splitlines()[0]})"
                           f"; check the topology, and that {plugin} matching jax "
                           f"{jax.__version__} is installed") from None
  if platform == "tpu" and len({(getattr(d, "slice_index", 0), tuple(d.coords))
                                for d in devices}) < len(devices):
    raise errors.UserError(f"--target={name}: libtpu gives more than one device per chip; "
                           "the figures in ferjax/peaks.py are per chip")
  peak = peaks.lookup(devices[0].device_kind)
  if peak is None:
    raise errors.UserError(f"--target={name}: no peak figures for {devices[0].device_kind!r} "
                           "in ferjax/peaks.py")
  return Target(name, platform, tuple(devices), peak)


def num_train_examples(config: ml_collections.ConfigDict, flag_value: int | None) -> int:
  """The train split size: the flag, the synthetic config's size or a known dataset's."""
  if flag_value:
    return flag_value
  name = config.dataset.name.split(":")[0]
  if name.startswith("synthetic_fer"):
    from ferjax.data.synthetic import config as synthetic_config, generate  # pylint: disable=g-import-not-at-top
    return generate.num_examples(synthetic_config.CONFIGS[name.split("/")[1]],
                                 config.dataset.train_split)
  if name.split("/")[0] in TRAIN_SIZES:
    return TRAIN_SIZES[name.split("/")[0]]
  raise errors.UserError(f"config.dataset.name={config.dataset.name!r}: train split size "
                         "unknown; give --num_train_examples")


def abstract_batch(config: ml_collections.ConfigDict, batch_size: int, batch_sharding) -> dict:
  """ShapeDtypeStructs of one global batch as pipeline.BatchLoader builds it."""
  size = config.input.image_size
  clip = config.dataset.kind == "clip"
  pixels = (batch_size, config.input.num_frames, size, size, 3) if clip else (
      batch_size, size, size, 3)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
  return {"frames" if clip else "image": spec(pixels, jnp.uint8),
          "label": spec((batch_size,), jnp.int32), "index": spec((batch_size,), jnp.int32),
          "mask": spec((batch_size,), jnp.bool_)}


def build_steps(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                num_train: int) -> tuple:
  """The jitted train and eval steps and an abstract TrainState, as train.Experiment builds
  them, with `nnx.eval_shape` instead of weights. Returns (train_step, eval_step, state)."""
  rngs = nnx.Rngs(config.seed)
  num_classes = config.dataset.num_classes
  accumulate = config.optimizer.accumulate_steps
  model = nnx.eval_shape(lambda r: model_registry.build_model(config.model, num_classes,
                                                             rngs=r), rngs)
  probe = abstract_batch(config, 1, None)
  feature_dim = nnx.eval_shape(lambda m, b: model_inputs.forward(
      m, b, config.input, train=False), model, probe)["features"].shape[-1]
  updates_per_epoch = pipeline.steps_per_epoch(
      num_train, config.batch_size, config.train_drop_remainder, accumulate) // accumulate
  # Labels only fill an objective's tables (SLM); their values do not change the program.
  context = objective_registry.TrainContext(
      num_classes, feature_dim, updates_per_epoch, num_train,
      read_labels=lambda: np.zeros((num_train,), np.int64), accumulate_steps=accumulate)
  objective = nnx.eval_shape(lambda r: objective_registry.build_objective(
      config.objective, context, rngs=r), rngs)
  model_graphdef, model_state = nnx.split(model)
  objective_graphdef, objective_state = nnx.split(objective)
  ema = jax.eval_shape(ema_lib.init, model_state) if ema_lib.enabled(config.ema) else None
  state = train.TrainState(jax.ShapeDtypeStruct((), jnp.int32), model_state, objective_state,
                           None, ema)
  params, _ = train.split_params(state)
  schedule = optim.make_schedule(config.schedule, config.optimizer.learning_rate,
                                 updates_per_epoch, config.num_epochs)
  tx = optim.make_optimizer(config, schedule, params)
  state = state.replace(opt_state=jax.eval_shape(tx.init, params))
  replicated, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                       state)
  train_step = jax.jit(train.make_train_step(model_graphdef, objective_graphdef, tx, config,
                                             num_classes),
                       in_shardings=(replicated, batch), out_shardings=(replicated, replicated),
                       donate_argnums=0)
  eval_step = jax.jit(evaluate_lib._eval_step(  # pylint: disable=protected-access
      model_graphdef, objective_graphdef, config.input, ()),
                      in_shardings=(replicated, replicated, batch), out_shardings=batch)
  return train_step, eval_step, state


def _replica_groups(text: str, num_devices: int) -> np.ndarray:
  """Replica groups `[G, S]` of logical device ids from any of XLA's three notations."""
  text = text.strip()
  if text.startswith("mesh["):  # mesh['a'=4,'b'=2] {'a'}: groups along the listed axes
    axes = re.findall(r"'([^']+)'=(\d+)", text.split("]")[0])
    chosen = re.findall(r"'([^']+)'", text.split("]", 1)[1])
    ids = np.arange(math.prod(int(n) for _, n in axes)).reshape([int(n) for _, n in axes])
    names = [a for a, _ in axes]
    order = [i for i, a in enumerate(names) if a not in chosen] + [names.index(a)
                                                                   for a in chosen]
    size = math.prod(ids.shape[names.index(a)] for a in chosen)
    return ids.transpose(order).reshape(-1, size)
  iota = re.fullmatch(r"\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", text)
  if iota:
    shape, dims = ([int(v) for v in g.split(",")] for g in iota.groups()[:2])
    ids = np.arange(math.prod(dims)).reshape(dims)
    if iota[3]:
      ids = ids.transpose([int(v) for v in iota[3].split(",")])
    return ids.reshape(shape)
  groups = [[int(v) for v in g.split(",") if v] for g in re.findall(r"\{([\d,]*)\}", text)]
  if not groups or groups == [[]]:  # {} means one group of every device
    return np.arange(num_devices)[None]
  return np.asarray(groups)


_INSTRUCTION = re.compile(r"=\s*(\(.*?\)|\S+)\s+(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_MEGASCALE = re.compile(r'_xla_megascale_transfer_type="(\w+)"')
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}


def collectives(hlo_text: str, devices) -> list[dict]:
  """Every collective in compiled HLO: kind, dtype(s), elements, bytes, replica groups and
  how many hosts / slices one group spans. `devices`: the executable's devices in logical
  id order (the mesh's, flattened)."""
  found = []
  slices = len({getattr(d, "slice_index", 0) for d in devices})
  for line in hlo_text.splitlines():
    dcn = _MEGASCALE.search(line)
    if dcn and re.search(r"\ssend\(", line):
      # Multi-slice: each slice's program hands its shard to the DCN runtime (a host
      # transfer); the same shard of every slice is reduced across slices.
      dtype, dims = re.search(r"(\w+)\[([\d,]*)\]", line.split("=", 1)[1]).groups()
      elements = math.prod(int(d) for d in dims.split(",") if d)
      found.append({"kind": f"dcn-{dcn[1].lower().replace('_', '-')}", "dtypes": [dtype],
                    "elements": elements, "bytes": elements * _DTYPE_BYTES.get(dtype, 4),
                    "replica_groups": f"the same shard in each of {slices} slices",
                    "group_size": slices, "num_groups": len(devices) // slices,
                    "hosts_per_group": slices, "slices_per_group": slices})
      continue
    match = _INSTRUCTION.search(line)   # `*-done` ops do not match: counted at their start
    if not match:
      continue
    result_type, kind = match.groups()
    shapes = re.findall(r"(\w+)\[([\d,]*)\]", result_type)
    if kind in ("all-gather", "collective-permute") and "-start(" in line:
      shapes = shapes[len(shapes) // 2:]  # async starts return (operands, results)
    elements = sum(math.prod(int(d) for d in dims.split(",") if d) for _, dims in shapes)
    bytes_ = sum(math.prod(int(d) for d in dims.split(",") if d) * _DTYPE_BYTES.get(t, 4)
                 for t, dims in shapes)
    groups_text = re.search(r"replica_groups=(.+?)(?:, [a-z_]+=|$)", line)
    groups = (_replica_groups(groups_text[1], len(devices)) if groups_text
              else np.arange(len(devices))[None])
    first = [devices[i] for i in groups[0] if i < len(devices)]
    found.append({
        "kind": kind, "dtypes": sorted({t for t, _ in shapes}), "elements": elements,
        "bytes": bytes_, "replica_groups": groups_text[1] if groups_text else "(all)",
        "group_size": int(groups.shape[1]), "num_groups": int(groups.shape[0]),
        "hosts_per_group": len({d.process_index for d in first}),
        "slices_per_group": len({getattr(d, "slice_index", 0) for d in first}),
    })
  return found


def _memory(compiled) -> dict:
  stats = compiled.memory_analysis()
  memory = {name: int(getattr(stats, f"{name}_size_in_bytes"))
            for name in ("argument", "output", "alias", "temp", "generated_code")}
  memory["total"] = (memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
                     + memory["generated_code"])
  return memory


def _model_cost(lowered, num_devices: int) -> dict:
  """FLOPs and bytes of the program as written (XLA's cost model on the unpartitioned,
  unoptimised module, counted by the CPU client: compile-only clients have none), / devices."""
  from jax._src.lib import _jax  # pylint: disable=g-import-not-at-top
  module = lowered.compiler_ir("hlo").as_hlo_module()
  cost = _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
  return {"flops": float(cost.get("flops", 0)) / num_devices,
          "bytes_accessed": float(cost.get("bytes accessed", 0)) / num_devices}


def _cost(compiled, lowered, num_devices: int) -> dict:
  """Per-device cost: `model_*` from the program as written, `flops`/`bytes_accessed` from
  the target's compiled program (with its padding and layout changes) where the target's
  compiler reports them (TPU), else the model figures (GPU compile-only clients)."""
  model = _model_cost(lowered, num_devices)
  cost = {"model_flops": model["flops"], "model_bytes_accessed": model["bytes_accessed"]}
  compiled_cost = compiled.cost_analysis()
  if compiled_cost:
    cost.update(flops=float(compiled_cost.get("flops", 0)),
                bytes_accessed=float(compiled_cost.get("bytes accessed", 0)), source="compiled")
  else:
    cost.update(flops=model["flops"], bytes_accessed=model["bytes_accessed"],
                source="program as written (the target's compiler gives no cost analysis)")
  return cost


def compile_step(step, args, devices) -> dict:
  """Lowers and compiles one step; memory, cost and collectives per device. `devices`:
  the mesh's devices in order (the executable's logical device ids)."""
  start = time.perf_counter()
  lowered = step.lower(*args)
  compiled = lowered.compile()
  seconds = time.perf_counter() - start
  return {"compile_seconds": round(seconds, 1), "memory": _memory(compiled),
          "cost": _cost(compiled, lowered, len(devices)), "collectives": collectives(compiled.as_text(), devices)}


# Collectives above this many elements are listed one by one; in the train step these
# all-reduces carry the gradients (BatchNorm statistics and scalars are far smaller).
LARGE_ELEMENTS = 65536


def gradient_all_reduces(report: dict) -> list[dict]:
  """The train step's large reductions: the gradients (XLA combines them into few; across
  slices, reduce-scatter in the slice + DCN all-reduce + all-gather)."""
  return [c for c in report["collectives"] if c["elements"] > LARGE_ELEMENTS
          and c["kind"] in ("all-reduce", "reduce-scatter", "dcn-all-reduce")]


def _mesh(config: ml_collections.ConfigDict, target: Target) -> jax.sharding.Mesh:
  """The 1-D data-parallel mesh over the target's devices; the batch must divide them."""
  devices = np.asarray(target.devices)
  if config.batch_size % devices.size:
    raise errors.UserError(f"batch size {config.batch_size} is not divisible by the "
                           f"{devices.size} devices of {target.name}")
  return jax.sharding.Mesh(devices, (sharding.DATA_AXIS,))


def report_for(config: ml_collections.ConfigDict, target: Target, num_train: int,
               headroom: float) -> dict:
  """Compiles train and eval steps at `config.batch_size` and rates them on `target`."""
  mesh = _mesh(config, target)
  devices = mesh.devices
  train_step, eval_step, state = build_steps(config, mesh, num_train)
  batch = abstract_batch(config, config.batch_size, sharding.batch_sharding(mesh))
  train_report = compile_step(train_step, (state, batch), list(devices.flat))
  eval_report = compile_step(eval_step, (state.model, state.objective, batch),
                             list(devices.flat))
  dtype = config.model.dtype
  peak_flops = getattr(target.peak, dtype)
  cost = train_report["cost"]
  step_seconds = max(cost["flops"] / peak_flops, cost["bytes_accessed"] / target.peak.hbm_bandwidth)
  usable = (1 - headroom) * target.peak.hbm_bytes
  grads = gradient_all_reduces(train_report)
  return {
      "target": target.name, "platform": target.platform, "device_kind": target.devices[0].device_kind,
      "num_devices": int(devices.size), "num_hosts": target.hosts,
      "batch_size": config.batch_size, "batch_per_device": config.batch_size // devices.size,
      "model_dtype": dtype, "gradient_all_reduce_dtypes": sorted({t for c in grads for t in c["dtypes"]}),
      "hbm_bytes": target.peak.hbm_bytes, "fits": train_report["memory"]["total"] <= usable,
      "headroom": headroom, "train": train_report, "eval": eval_report,
      "collective_bytes_per_step": sum(c["bytes"] for c in train_report["collectives"]),
      "roofline": {"peak_flops": peak_flops, "hbm_bandwidth": target.peak.hbm_bandwidth,
                   "step_seconds": step_seconds,
                   "bound": "compute" if cost["flops"] / peak_flops >= cost["bytes_accessed"]
                   / target.peak.hbm_bandwidth else "memory",
                   "examples_per_second": config.batch_size / step_seconds if step_seconds else None},
  }


def largest_fitting(memory_of: Callable[[int], float | None], start: int,
                    usable: float) -> tuple[int, dict[int, float | None]]:
  """The largest batch b >= 1 with memory_of(b) <= usable, assuming memory grows with b;
  0 if b = 1 does not fit. memory_of returns None where the compiler refuses the batch.

  The train step's memory is close to affine in the batch (weights and optimizer state
  plus activations per example), so each trial is the batch at which the line through
  the two nearest measured points reaches `usable` (a secant step); a bisection step
  follows any trial that did not halve the bracket. While only one batch b is known to
  fit, the line runs through the origin instead: the intercept it drops is positive, so
  the step undershoots and lands on a batch that fits, which a start near the limit
  (a global --batch_size guess) brackets in about three trials. Returns (batch,
  {batch: memory}).
  """
  trials: dict[int, float | None] = {}
  low, high = 0, None          # the largest batch that fits, the smallest that does not

  def secant() -> int | None:
    known = {b: m for b, m in trials.items() if m is not None}
    if low in known and high in known:
      pair = [low, high]
    elif low:                  # extrapolate from the two largest batches that fit
      pair = sorted(b for b in known if b <= low)[-2:]
      if len(pair) == 1:
        pair, known[0] = [0, low], 0.0
    else:                      # ... or from the two smallest that do not
      pair = sorted(b for b in known if b >= high)[:2]
    if len(pair) < 2 or known[pair[1]] <= known[pair[0]]:
      return None
    (b0, b1), (m0, m1) = pair, (known[pair[0]], known[pair[1]])
    return b0 + math.floor((usable - m0) * (b1 - b0) / (m1 - m0))

  candidate, bisect = max(start, 1), False
  while True:
    width = None if high is None else high - low
    trials[candidate] = memory_of(candidate)
    if trials[candidate] is not None and trials[candidate] <= usable:
      low = candidate
    else:
      high = candidate
    if high is not None and high - low <= 1:
      return low, trials
    # After a secant step that left more than half the bracket, bisect once.
    bisect = not bisect and width is not None and high - low > width // 2
    guess = None if bisect else secant()
    if high is None:
      # The line says `low` is the largest: check low + 1; where two batches that fit
      # need the same memory (padded layouts), the line is flat: double.
      candidate = 2 * low if guess is None else min(max(guess, low + 1), 8 * low)
    else:
      candidate = (low + high) // 2 if guess is None else min(max(guess, low + 1), high - 1)


def find_max_batch(config: ml_collections.ConfigDict, target: Target, num_train: int,
                   headroom: float, train: dict | None = None) -> dict:
  """The largest per-device batch whose train step fits in HBM (`largest_fitting` over
  compiles of the train step alone, from the config's per-device batch), with each trial's
  memory (MiB) and compiled GFLOP per example: near the HBM limit memory stops being
  affine in the batch, and the FLOPs per example tell a changed schedule (the same FLOPs)
  from recomputation (more). `train`: `report_for`'s train part at the config's batch,
  where already compiled."""
  devices = len(target.devices)
  flops: dict[int, float | None] = {}

  def memory_of(per_device: int) -> float | None:
    if per_device * devices == config.batch_size and train is not None:
      cost = train["cost"]
      flops[per_device] = cost["flops"] if cost["source"] == "compiled" else None
      return train["memory"]["total"]
    trial = config.copy_and_resolve_references()
    trial.batch_size = per_device * devices
    mesh = _mesh(trial, target)
    train_step, _, state = build_steps(trial, mesh, num_train)
    batch = abstract_batch(trial, trial.batch_size, sharding.batch_sharding(mesh))
    try:
      compiled = train_step.lower(state, batch).compile()
    except jax.errors.JaxRuntimeError as e:  # e.g. RESOURCE_EXHAUSTED at compile time
      logging.info("batch %d per device: %s", per_device, str(e).splitlines()[0])
      return None
    total, cost = _memory(compiled)["total"], compiled.cost_analysis()
    flops[per_device] = float(cost.get("flops", 0)) if cost else None  # None: GPU targets
    logging.info("batch %d per device: train step %.1f MiB, %s GFLOP", per_device,
                 total / 2**20, "?" if cost is None else f"{flops[per_device] / 1e9:.1f}")
    return total

  usable = (1 - headroom) * target.peak.hbm_bytes
  low, trials = largest_fitting(memory_of, config.batch_size // devices, usable)
  return {"max_batch_per_device": low,
          "trials": {str(b): None if m is None else round(m / 2**20, 1)
                     for b, m in sorted(trials.items())},
          "gflop_per_example": {str(b): round(f / b / 1e9, 2)
                                for b, f in sorted(flops.items()) if f}}


def _mib(value: float) -> str:
  return f"{value / 2**20:,.1f} MiB"


def format_report(report: dict) -> str:
  """The report as text: memory, cost, roofline and the collectives by kind."""
  unit = "clips" if report["clip"] else "images"
  lines = [f"{report['config']} on {report['target']} ({report['num_devices']} x "
           f"{report['device_kind']}, {report['num_hosts']} host(s), {report['num_slices']} "
           f"slice(s)); global batch {report['batch_size']} = {report['batch_per_device']}/device, "
           f"model dtype {report['model_dtype']}"]
  for step in ("train", "eval"):
    part = report[step]
    memory = part["memory"]
    lines.append(f"{step}: compiled in {part['compile_seconds']} s; per device: arguments "
                 f"{_mib(memory['argument'])}, outputs {_mib(memory['output'])}, aliased "
                 f"{_mib(memory['alias'])}, temporaries {_mib(memory['temp'])}, code "
                 f"{_mib(memory['generated_code'])}, total {_mib(memory['total'])}")
    cost = part["cost"]
    lines.append(f"  per device and step: {cost['flops'] / 1e9:,.1f} GFLOP, "
                 f"{cost['bytes_accessed'] / 1e9:,.2f} GB accessed ({cost['source']}); the "
                 f"program as written: {cost['model_flops'] / 1e9:,.1f} GFLOP")
  lines.append(f"fits: {report['fits']} (train step {_mib(report['train']['memory']['total'])} "
               f"of {report['hbm_bytes'] / 1e9:.0f} GB HBM with {report['headroom']:.0%} kept free)")
  roof = report["roofline"]
  lines.append(f"roofline: {roof['step_seconds'] * 1e3:.2f} ms/step ({roof['bound']}-bound; "
               f"{roof['peak_flops'] / 1e12:.0f} TFLOP/s, {roof['hbm_bandwidth'] / 1e9:.0f} GB/s)"
               f" -> {roof['examples_per_second']:,.0f} {unit}/s for the slice")
  lines.append(f"gradient all-reduce dtype(s): {', '.join(report['gradient_all_reduce_dtypes'])};"
               f" collectives move {_mib(report['collective_bytes_per_step'])} per device and step")
  small = []
  for c in report["train"]["collectives"]:
    if c["elements"] <= LARGE_ELEMENTS:
      small.append(c)
      continue
    lines.append(f"  {c['kind']} {'/'.join(c['dtypes'])} {c['elements']:,} elements "
                 f"({_mib(c['bytes'])}) over groups of {c['group_size']} spanning "
                 f"{c['hosts_per_group']} host(s), {c['slices_per_group']} slice(s): "
                 f"{c['replica_groups']}")
  if small:
    spans = sorted({(c["hosts_per_group"], c["slices_per_group"]) for c in small})
    dtypes = "/".join(sorted({t for c in small for t in c["dtypes"]}))
    lines.append(f"  + {len(small)} small collectives ({_mib(sum(c['bytes'] for c in small))} in "
                 f"all, {dtypes}: BatchNorm statistics and parameters, metrics) spanning "
                 f"(hosts, slices) {spans}")
  if "max_batch" in report:
    search, trials = report["max_batch"], []
    for b, mib in search["trials"].items():
      trial = f"{b}: " + ("refused" if mib is None else f"{mib} MiB")
      if b in search["gflop_per_example"]:
        trial += f" {search['gflop_per_example'][b]} GFLOP/example"
      trials.append(trial)
    lines.append(f"largest per-device batch that fits: {search['max_batch_per_device']} "
                 f"(train step per trial batch: {', '.join(trials)})")
  return "\n".join(lines)
