"""Converts a PyTorch checkpoint once into ferjax's format and prints the report.

  python -m ferjax.convert --arch=resnet18 --src=resnet18_msceleb.pth --dst=DIR
  python -m ferjax.convert --arch=lstpnet --class_order=dfew --src=best_...pth --dst=DIR

Installed as `ferjax-convert`. DIR is then usable as `--config.init_from=DIR` without torch. The load is
checked against the ferjax model of `--arch` (with `--num_classes` outputs,
default: the checkpoint's own head); only the arrays that match are saved.
"""

import sys

from absl import app, flags, logging

from ferjax import cli, errors, paths

ARCHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152,
         "lstpnet": None}

_ARCH = flags.DEFINE_enum("arch", None, list(ARCHS), "Architecture of the checkpoint.")
_SRC = flags.DEFINE_string("src", None, "PyTorch file (.pth / .pt) to convert.")
_DST = flags.DEFINE_string("dst", None, "New directory for the converted checkpoint.")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "Outputs of the target head (default: the checkpoint's; 0: no head).")
_CLASS_ORDER = flags.DEFINE_enum(
    "class_order", None, ["dfew", "canonical"],
    "lstpnet only, required: the order of the checkpoint's outputs (dfew for the DFEW "
    "checkpoint, canonical for FERV39k/AFEW); the head is saved in canonical order.")
_PARTIAL = flags.DEFINE_bool(
    "partial", False, "Save what matches and report the rest instead of failing.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "List matched keys too.")


def _head_size(converted) -> int | None:
  kernel = converted.arrays.get("fc/kernel")
  return None if kernel is None else kernel[1].shape[1]


def _target(arch: str, num_classes: int | None):
  """The abstract ferjax model of `arch` (an nnx.Module of shapes only, nothing allocated)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from ferjax.models.lstpnet import LSTPNet  # pylint: disable=g-import-not-at-top
  from ferjax.models.resnet import ResNet  # pylint: disable=g-import-not-at-top
  if arch == "lstpnet":
    return nnx.eval_shape(lambda: LSTPNet(num_classes or 7, rngs=nnx.Rngs(0)))
  return nnx.eval_shape(lambda: ResNet(ARCHS[arch], num_classes or None, rngs=nnx.Rngs(0)))


def convert(arch: str, src: str, dst: str, *, num_classes: int | None, class_order: str | None,
            partial: bool, verbose: bool) -> None:
  """Converts `src` for `arch`, prints the report and saves the matched arrays to `dst`."""
  # The ML stack (JAX, Flax, Orbax, torch) loads here, not at import: --help answers at once.
  # pylint: disable=g-import-not-at-top
  from ferjax.convert import saved
  from ferjax.convert.init_from import convert_torch, torch_family
  from ferjax.convert.state import match
  from ferjax.convert.torch_file import read_state_dict
  # pylint: enable=g-import-not-at-top
  state_dict = read_state_dict(src)
  family = "lstpnet" if arch == "lstpnet" else "resnet"
  if torch_family(state_dict) != family:
    raise ValueError(f"{src} holds a {torch_family(state_dict)} checkpoint, not --arch={arch}")
  if family == "lstpnet" and class_order is None:
    raise ValueError("--arch=lstpnet needs --class_order=dfew (DFEW checkpoint) or "
                     "--class_order=canonical (FERV39k, AFEW checkpoints)")
  if family != "lstpnet" and class_order is not None:
    raise ValueError("--class_order applies to --arch=lstpnet only")
  converted = convert_torch(state_dict, source=src, class_order=class_order)
  if num_classes is None:
    num_classes = _head_size(converted)
  report = match(_target(arch, num_classes), converted, source=src, partial=partial)
  print(report.table(verbose=verbose))
  if not partial and not report.ok:
    raise ValueError(f"{report.error_line()} (rerun with --partial to save what matches)")
  arrays = {row.target: converted.arrays[row.target][1] for row in report.matched}
  saved.save(dst, arrays, {"family": family, "arch": arch, "source": src,
                           "class_order": class_order or "", "num_classes": num_classes or 0})
  print(f"saved {len(arrays)} arrays to {dst}; use --config.init_from={dst}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # Orbax logs every step of a save at INFO.
  try:
    # Orbax saves only to absolute paths; bash leaves `~` after `--dst=` as it is.
    src = paths.absolute(_SRC.value, "--src", directory=False)
    dst = paths.absolute(_DST.value, "--dst")
    convert(_ARCH.value, src, dst, num_classes=_NUM_CLASSES.value,
            class_order=_CLASS_ORDER.value, partial=_PARTIAL.value, verbose=_VERBOSE.value)
  except (errors.UserError, FileNotFoundError, ImportError, ValueError) as e:
    errors.exit_with(e)


def run() -> None:
  """Console entry point `ferjax-convert`."""
  flags.mark_flags_as_required(["arch", "src", "dst"])
  cli.run(main, sys.modules[__name__])


if __name__ == "__main__":
  run()
