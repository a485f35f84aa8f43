"""Prepares a dataset once into TFDS ArrayRecord files.

  python -m ferjax.data.prepare NAME [--config=CONFIG] --manual_dir=DIR [--data_dir=DIR]
      [--aligned_dir=DIR] [--ran_dir=DIR] [--list_file=PATH[,PATH...]] [--cropped_dir=DIR]
      [--overwrite]

(also installed as `ferjax-prepare`). Real datasets are read from the user's
manual download (layouts: docs/datasets.md); `--data_dir` defaults to
$TFDS_DATA_DIR or ~/tensorflow_datasets, as TFDS does. A progress bar counts
images; the closing summary gives examples per split and class, every skipped
item with its reason and the build throughput. Mistakes in the command or the
download layout are printed as one line on stderr (exit status 2).
"""

from __future__ import annotations  # TFDS types in signatures; TFDS loads on first use

import importlib.util
import inspect
import os
import pathlib
import shutil
import sys
import typing

# TensorFlow (imported by TFDS) logs its C++ start-up chatter unless told not to.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # pylint: disable=g-import-not-at-top
import tqdm  # pylint: disable=g-import-not-at-top

from ferjax import errors  # pylint: disable=g-import-not-at-top

if typing.TYPE_CHECKING:
  import tensorflow_datasets as tfds
  from ferjax.data.builders import common

# A private flag registry: this module can be imported next to ferjax.main
# (whose --config is a config file) without duplicate-flag errors.
FLAGS = flags.FlagValues()
flags.DEFINE_string("config", None, "Builder config name (default: the builder's default).",
                    flag_values=FLAGS)
flags.DEFINE_string("manual_dir", None, "Folder holding the manual download.",
                    flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "TFDS data dir to write to.", flag_values=FLAGS)
flags.DEFINE_string("aligned_dir", None, "RAF-DB: flat folder of *_aligned.jpg files.",
                    flag_values=FLAGS)
flags.DEFINE_string("ran_dir", None, "RAF-DB/AffectNet/FERPlus: folder holding RAN's "
                    "RAF_DB_dir/, AffectNet_dir/, FERplus_dir/ subset lists.",
                    flag_values=FLAGS)
flags.DEFINE_list("list_file", [], "DFEW/FERV39k/AFEW with --config=lstpnet|former_dfer: "
                  "that repository's list files.", flag_values=FLAGS)
flags.DEFINE_string("cropped_dir", None, "Multi-PIE: pre-cropped faces mirroring the tree.",
                    flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Rebuild even if the dataset is already prepared.",
                  flag_values=FLAGS)

# Command-line flag -> builder keyword argument.
BUILDER_FLAGS = {"aligned_dir": "aligned_dir", "ran_dir": "ran_dir",
                 "list_file": "list_files", "cropped_dir": "cropped_dir"}
USAGE = ("usage: python -m ferjax.data.prepare NAME [--config=CONFIG] --manual_dir=DIR "
         "[--data_dir=DIR] [--aligned_dir=DIR] [--ran_dir=DIR] [--list_file=PATH,...] "
         "[--cropped_dir=DIR] [--overwrite]")


class _Progress:
  """A tqdm bar of images written, opened at the first image (so errors stay one line)."""

  def __init__(self, desc: str, enabled: bool):
    self._desc, self._enabled, self._bar = desc, enabled, None

  def __call__(self, images: int) -> None:
    if self._bar is None:
      self._bar = tqdm.tqdm(unit=" images", desc=self._desc, disable=not self._enabled)
    self._bar.update(images)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def datasets() -> dict[str, type[tfds.core.DatasetBuilder]]:
  """ferjax's registered builders by name."""
  # pylint: disable=g-import-not-at-top,redefined-outer-name
  import tensorflow_datasets as tfds
  import ferjax.data.builders  # pylint: disable=unused-import  # registers
  # pylint: enable=g-import-not-at-top,redefined-outer-name
  found, stack = {}, [tfds.core.DatasetBuilder]
  while stack:
    cls = stack.pop()
    stack += cls.__subclasses__()
    if cls.__module__.startswith("ferjax.") and not inspect.isabstract(cls):
      found[cls.name] = cls
  return found


def prepare(name: str, *, config: str | None = None, manual_dir: str | None = None,
            data_dir: str | None = None, builder_kwargs: dict | None = None,
            overwrite: bool = False, progress: bool = True
            ) -> tuple[tfds.core.DatasetBuilder, common.BuildReport | None]:
  """Builds dataset `name` (if not yet built) and returns the builder and its build report.

  Raises:
    UserError: unknown dataset/config/flag, missing manual_dir, wrong layout.
  """
  # pylint: disable=g-import-not-at-top,redefined-outer-name
  import tensorflow_datasets as tfds
  from ferjax.data.builders import common
  # pylint: enable=g-import-not-at-top,redefined-outer-name
  builders = datasets()
  if name not in builders:
    raise errors.UserError(f"unknown dataset {name!r}; ferjax datasets: "
                           f"{', '.join(sorted(builders))}")
  cls = builders[name]
  builder_kwargs = {k: v for k, v in (builder_kwargs or {}).items() if v}
  accepted = inspect.signature(cls.__init__).parameters
  for key in builder_kwargs:
    if key not in accepted:
      flag = next((f for f, k in BUILDER_FLAGS.items() if k == key), key)
      raise errors.UserError(f"--{flag} is not used by {name}")
  download_config = tfds.download.DownloadConfig(
      download_mode=(tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite else
                     tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  if cls.MANUAL_DOWNLOAD_INSTRUCTIONS:
    if not manual_dir:
      raise errors.UserError(f"{name} is built from your own download: pass "
                             f"--manual_dir=DIR (layout: docs/datasets.md)")
    path = pathlib.Path(manual_dir).expanduser()
    if not path.is_dir():
      raise common.LayoutError(f"manual_dir {path} is not a folder (layout: docs/datasets.md)")
    download_config.manual_dir = str(path)
  data_dir = common.resolve_data_dir(data_dir)
  check_data_dir(data_dir)
  try:
    builder = cls(config=config, data_dir=data_dir, file_format="array_record",
                  **builder_kwargs)
  except ValueError as e:
    configs = ", ".join(c.name for c in cls.BUILDER_CONFIGS) or "none"
    raise errors.UserError(f"{name}: {str(e).splitlines()[0]} (configs: {configs})") from None
  # TFDS reads the dataset_info.json of an earlier build here; --overwrite cannot help.
  except Exception as e:  # pylint: disable=broad-except
    config = config or cls.DEFAULT_CONFIG_NAME or next(
        (c.name for c in cls.BUILDER_CONFIGS), "")
    folder = pathlib.Path(data_dir, name, config, str(cls.VERSION))
    raise errors.UserError(f"{name}: {folder / 'dataset_info.json'} of an earlier build cannot "
                           f"be read ({type(e).__name__}); delete {folder} and run again"
                           ) from None
  bar = _Progress(f"{name}/{builder.builder_config.name}" if builder.builder_config else name,
                  enabled=progress)
  if isinstance(builder, common.ManualBuilder):
    builder.progress = bar
  # TFDS removes its incomplete version folder, but not the folders above it nor
  # its (unused) download folder.
  created = {_first_missing(path) for path in (builder.data_path, f"{data_dir}/downloads")}
  try:
    builder.download_and_prepare(download_config=download_config)
  except BaseException:
    for path in created - {None}:
      shutil.rmtree(path, ignore_errors=True)
    raise
  finally:
    bar.close()
  report_path = builder.data_path / common.REPORT_FILE
  report = (common.BuildReport.from_json(report_path.read_text())
            if report_path.exists() else None)
  return builder, report


def check_data_dir(data_dir: str) -> None:
  """Fails with one line when a local `data_dir` cannot hold a dataset.

  Raises:
    UserError: when the path or its nearest existing parent is not a writable folder.
  """
  if "://" in data_dir:  # gs:// and other remote file systems: TFDS reports errors.
    return
  path = pathlib.Path(data_dir)
  existing = next(p for p in (path, *path.parents) if p.exists())
  if not existing.is_dir():
    raise errors.UserError(f"--data_dir {path}: {existing} is not a folder")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise errors.UserError(f"--data_dir {path}: {existing} is not writable")


def _first_missing(data_path) -> pathlib.Path | None:
  """The outermost missing folder on the way to a local `data_path` (what a build creates)."""
  if "://" in os.fspath(data_path):
    return None
  missing = None
  path = pathlib.Path(os.fspath(data_path))
  while not path.exists():
    missing, path = path, path.parent
  return missing


def summary(builder: tfds.core.DatasetBuilder, report: common.BuildReport | None) -> list[str]:
  """The closing summary: where the data are, then the build report (or split sizes)."""
  lines = [f"{builder.info.full_name} prepared in {builder.data_path}"]
  if report is not None:
    return lines + report.summary()
  for split, info in builder.info.splits.items():
    lines.append(f"{split}: {info.num_examples:,} examples")
  return lines


def dataset_names() -> list[str]:
  """The builders' names without importing TFDS: each has its own folder in builders/."""
  folder = importlib.util.find_spec("ferjax.data.builders").submodule_search_locations[0]
  return sorted(entry.name for entry in os.scandir(folder)
                if os.path.isfile(os.path.join(entry.path, "__init__.py")))


def main(argv: list[str]) -> int:
  """Parses `argv` (program name first), prepares the dataset, prints the summary."""
  if any(a in ("-h", "--help") for a in argv[1:]):
    print(f"{USAGE}\ndatasets: {', '.join(dataset_names())} (configs and layouts: "
          f"docs/datasets.md; an unknown --config lists the dataset's)\n{FLAGS.get_help()}")
    return 0
  FLAGS.unparse_flags()
  try:
    args = FLAGS(argv)[1:]
    if len(args) != 1:
      raise errors.UserError(f"give exactly one dataset NAME, got {args or 'none'}\n{USAGE}")
    builder, report = prepare(
        args[0], config=FLAGS.config, manual_dir=FLAGS.manual_dir, data_dir=FLAGS.data_dir,
        builder_kwargs={k: FLAGS[f].value for f, k in BUILDER_FLAGS.items()},
        overwrite=FLAGS.overwrite)
  except (errors.UserError, flags.Error) as e:
    print(f"ferjax-prepare: error: {e}", file=sys.stderr)
    return 2
  print("\n".join(summary(builder, report)))
  return 0


def run() -> None:
  """Console entry point (`ferjax-prepare`)."""
  sys.exit(main(sys.argv))


if __name__ == "__main__":
  run()
