"""The benchmark's results as a readable table (the JSON holds the same figures)."""

INPUT_TARGET = 1.5   # input pipeline rate / train step rate (docs/benchmarks.md)


def _si(value: float | None, unit: str) -> str:
  if value is None:
    return "n/a"
  for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(value) >= factor:
      return f"{value / factor:.3g} {prefix}{unit}"
  return f"{value:.3g} {unit}"


def _bytes(value: int | None) -> str:
  if value is None:
    return "n/a"
  return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def _seconds(value: float) -> str:
  return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def _rows(title: str, rows: list[tuple[str, str]]) -> list[str]:
  width = max(len(name) for name, _ in rows)
  return [title] + [f"  {name:<{width}}  {value}" for name, value in rows]


def _train_rows(side: dict, unit: str) -> list[tuple[str, str]]:
  rows = []
  if "compile_s" in side:
    rows.append(("compile", f"{side['trace_lower_s']:.2f} s trace+lower, "
                            f"{side['compile_s']:.2f} s XLA compile"))
  rows += [
      (f"step time (median of {side['steps']})",
       f"{_seconds(side['step_time_s'])}  [min {_seconds(side['step_time_min_s'])}]"),
      ("throughput", f"{side['examples_per_s']:.4g} {unit}/s"
                     + (f"  ({side['frames_per_s']:.4g} frames/s)" if "frames_per_s" in side
                        else "")),
  ]
  if "flops_per_step_per_device" in side:
    rows += [
        ("FLOPs/step (XLA)", f"{_si(side['flops_per_step'], 'FLOP')}"),
        ("achieved", _si(side["achieved_flops_per_s"], "FLOP/s")),
        ("MFU", "n/a (no peak FLOP/s known for this device)" if side["mfu"] is None
         else f"{100 * side['mfu']:.1f}% of {_si(side['peak_flops_per_device'], 'FLOP/s')}"
              " per device"),
    ]
  else:
    rows.append(("FLOPs/step (torch counter)", _si(side["flops_per_step"], "FLOP")))
  rows.append(("peak memory", f"{_bytes(side['memory']['peak_bytes'])}  "
                              f"[{side['memory']['source']}]"))
  buffers = side.get("xla_buffers")
  if buffers:
    rows.append(("XLA buffers", f"args {_bytes(buffers['argument_bytes'])}, temps "
                                f"{_bytes(buffers['temp_bytes'])}, outputs "
                                f"{_bytes(buffers['output_bytes'])} (aliased "
                                f"{_bytes(buffers['alias_bytes'])})"))
  return rows


def format_report(results: dict) -> str:
  """Multi-line text: setup, ferjax train step, PyTorch side, ratio, input pipeline."""
  setup, device, host = results["setup"], results["device"], results["host"]
  unit = setup["unit"]
  shape = f"{setup['image_size']}x{setup['image_size']}"
  if setup["kind"] == "clip":
    shape = f"{setup['num_frames']} frames of {shape}"
  lines = [
      f"ferjax benchmark, {results['date']}: {device['count']} x {device['device_kind']} "
      f"({device['platform']}); host {host['cpus']} CPUs, load average "
      f"{host['load_average_start']:.1f} -> {host['load_average_end']:.1f}",
      f"  {results['command']}",
      f"  config {setup['config']}: model {setup['model']} (depth {setup['depth']}), "
      f"global batch {setup['batch_size']}, {shape}, {setup['dtype']}, optimizer "
      f"{setup['optimizer']}, objective {setup['objective']}",
      "",
  ]
  lines += _rows("ferjax train step (synthetic batch on the device)",
                 _train_rows(results["ferjax"], unit))
  if "torch" in results:
    torch_side = results["torch"]
    lines += [""] + _rows(
        f"PyTorch {torch_side['torch_version']} on {torch_side['device']} "
        f"({torch_side['precision']}, {torch_side['threads']} threads)",
        [("compares", torch_side["compared"])] + _train_rows(torch_side, unit))
    lines += ["", f"ratio ferjax/PyTorch (throughput): "
                  f"{results['ratio_ferjax_over_torch']:.2f}x"]
    if (torch_side["device"] == "cpu") != (device["platform"] == "cpu"):
      lines.append(f"  note: PyTorch ran on {torch_side['device']}, ferjax on "
                   f"{device['platform']}: not a like-for-like ratio")
  if "input" in results:
    lines += ["", f"input pipeline: {setup['dataset']} train split, train augmentation, "
                  f"host batch {results['input'][0]['batch_size']} "
                  f"(target: >= {INPUT_TARGET}x the train step)",
              f"  {'workers':>7}  {unit + '/s':>12}  {'x train step':>12}  {'start-up':>9}  "
              f"{'window':>7}"]
    for row in results["input"]:
      lines.append(f"  {row['workers']:>7}  {row['examples_per_s']:>12.4g}  "
                   f"{row['ratio_to_train_step']:>11.2f}x  {row['startup_s']:>8.2f}s  "
                   f"{row['window_s']:>6.2f}s")
  return "\n".join(lines)
