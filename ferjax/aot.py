r"""Compiles the real train and eval steps for a TPU slice or GPU node on any host.

  python -m ferjax.aot --config=configs/lstpnet.py --target=v5e:4x4
  python -m ferjax.aot --config=configs/stse_resnet50.py --target=h100x8 --out=r.json
  python -m ferjax.aot --config=configs/resnet.py:rafdb --target=v5p:2x2x2 --find_max_batch
  python -m ferjax.aot --config=configs/lstpnet.py --target=v5e:4x4 --num_slices=2

Ahead-of-time (AOT) compilation: the steps are built with abstract shapes
(`nnx.eval_shape`, no weights, no dataset), lowered with the shardings
training uses over a mesh of the target's compile-only devices and compiled
by the target's own compiler (libtpu for TPUs, the CUDA plugin for GPUs),
all on this host's CPU. The report gives per-device memory, FLOPs and bytes
per step, every collective, and a roofline throughput; see docs/scaling.md.
The library is `ferjax.scaling`; installed as `ferjax-aot`.
"""

import json
import sys

from absl import flags

from ferjax import cli, errors

FLAGS = flags.FLAGS
cli.define_config_flag("Config file or packaged config name, optionally with :ARG.")
_TARGET = flags.DEFINE_string(
    "target", None, "v4|v5e|v5p|v6e:AxB[xC] (a TPU slice topology) or h100xN|h200xN|"
    "a100xN (N GPUs, 8 per host).")
_SLICES = flags.DEFINE_integer("num_slices", 1, "TPU slices (multi-slice over DCN) or GPU "
                               "node groups.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch size (default: the config's).")
_TRAIN_SIZE = flags.DEFINE_integer(
    "num_train_examples", None, "Train split size for the per-example tables (default: the "
    "dataset's known size).")
_HEADROOM = flags.DEFINE_float("headroom", 0.1, "Fraction of HBM kept free for 'fits'.")
_MAX_BATCH = flags.DEFINE_bool("find_max_batch", False,
                               "Also bisect the largest per-device batch that fits.")
_OUT = flags.DEFINE_string("out", None, "Write the report to this JSON file.")
flags.mark_flags_as_required(["config", "target"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    errors.exit_with(f"unexpected arguments: {' '.join(argv[1:])}")
  # JAX, libtpu and the models load here, not at import: --help answers at once.
  from ferjax import run_config, scaling  # pylint: disable=g-import-not-at-top
  try:
    config = FLAGS.config.copy_and_resolve_references()
    run_config.validate(config)
    if _BATCH.value:
      config.batch_size = config.eval_batch_size = _BATCH.value
    else:
      config.eval_batch_size = config.batch_size
    target = scaling.make_target(_TARGET.value, _SLICES.value)
    num_train = scaling.num_train_examples(config, _TRAIN_SIZE.value)
    report = scaling.report_for(config, target, num_train, _HEADROOM.value)
    report.update(config=FLAGS["config"].config_filename, clip=config.dataset.kind == "clip",
                  num_slices=_SLICES.value, num_train_examples=num_train,
                  command=" ".join(["python -m ferjax.aot", *sys.argv[1:]]))
    if _MAX_BATCH.value:
      report["max_batch"] = scaling.find_max_batch(config, target, num_train, _HEADROOM.value,
                                                   report["train"])
  except (errors.UserError, ValueError) as e:
    errors.exit_with(str(e).splitlines()[0])
  print(scaling.format_report(report))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(report, f, indent=1)


def run() -> None:
  """Console entry point `ferjax-aot`."""
  cli.run(main, sys.modules[__name__], errors.parse_flags)


if __name__ == "__main__":
  run()
