"""Shared fixtures: a tiny synthetic dataset built once per test session."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

try:
  # torchvision's extension modules crash (SIGSEGV) when first loaded after libtpu (the
  # TPU compile tests) in the same process; loaded first, both work.
  import torchvision  # pylint: disable=unused-import
except ImportError:  # The `torch` extra is not installed.
  pass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One persistent XLA compilation cache for the session, inherited by every child
# process: the CLI tests start dozens of `ferjax.main` processes that compile the
# same parameter initializers (one small program per shape) and train/eval steps.
_XLA_CACHE = tempfile.mkdtemp(prefix="ferjax-test-xla-cache-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# Overrides that shrink configs/resnet.py:synthetic to seconds on a CPU.
TINY_IMAGE_OVERRIDES = (
    "--config.dataset.name=synthetic_fer/images_small",
    "--config.input.image_size=32",
    "--config.input.resize_size=36",
    "--config.batch_size=32",
    "--config.eval_batch_size=64",
    "--config.num_epochs=1",
    "--config.log_every_steps=2",
)


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding synthetic_fer/images_small and clips_small."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  from ferjax.data import pipeline  # pylint: disable=g-import-not-at-top
  for name in ("synthetic_fer/images_small", "synthetic_fer/clips_small"):
    pipeline.load_builder(name, data_dir)
  return data_dir


def run_cli(args, data_dir: str, *, env: dict | None = None, timeout: int = 600,
            check: bool = True) -> subprocess.CompletedProcess:
  """Runs `python -m ferjax.main ARGS` from the repository root on `data_dir`."""
  full_env = dict(os.environ, TFDS_DATA_DIR=data_dir, **(env or {}))
  result = subprocess.run([sys.executable, "-m", "ferjax.main", *args], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
  if check and result.returncode != 0:
    raise AssertionError(f"ferjax.main failed ({result.returncode}):\n{result.stderr[-4000:]}")
  return result


# Shrinks configs/lstpnet.py:synthetic to seconds on a CPU (on clips_small).
TINY_CLIP_OVERRIDES = (
    "--config.dataset.name=synthetic_fer/clips_small",
    "--config.input.image_size=32", "--config.input.resize_size=32",
    "--config.input.num_frames=4", "--config.input.num_segments=4",
    "--config.model.num_frames=4", "--config.batch_size=50",
    "--config.eval_batch_size=50", "--config.num_epochs=1",
)


@pytest.fixture(scope="session")
def trained_image_run(tfds_data_dir, tmp_path_factory) -> tuple[str, subprocess.CompletedProcess]:
  """A tiny ResNet-18 run, trained once for the tests that only read it (with a
  2-step profiler window): (workdir, the CompletedProcess of its training)."""
  workdir = str(tmp_path_factory.mktemp("image_run") / "resnet")
  result = run_cli(["--config=configs/resnet.py:synthetic", f"--workdir={workdir}",
                    *TINY_IMAGE_OVERRIDES, "--config.profile_steps=2",
                    "--config.profile_first_step=3"], tfds_data_dir)
  return workdir, result


@pytest.fixture(scope="session")
def trained_clip_run(tfds_data_dir, trained_image_run,
                     tmp_path_factory) -> tuple[str, subprocess.CompletedProcess]:
  """A tiny LSTPNet run started from `trained_image_run`'s weights (`init_from`):
  (workdir, the CompletedProcess of its training)."""
  workdir = str(tmp_path_factory.mktemp("clip_run") / "lstpnet")
  result = run_cli(["--config=configs/lstpnet.py:synthetic", f"--workdir={workdir}",
                    f"--config.init_from={trained_image_run[0]}", *TINY_CLIP_OVERRIDES],
                   tfds_data_dir)
  return workdir, result


@pytest.fixture
def ferjax_cli(tfds_data_dir):
  """`run_cli` on the tiny data."""
  return lambda args, **kwargs: run_cli(args, tfds_data_dir, **kwargs)
