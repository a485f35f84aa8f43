"""Entry points and configs work from any directory, as from an installed wheel.

The console scripts' `--help` must answer fast (no JAX, TensorFlow, TFDS or
Orbax at import time), exit 0 and list the real flags; `--config` takes a
packaged config name or a file; a wrong one is one line and exit status 2.
The wheel itself (`pip install .` into a fresh venv) is checked by hand.
"""

import importlib
import importlib.util
import os
import subprocess
import resource
import sys
import tomllib

from absl import flags
import pytest

from ferjax import cli, configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("jax", "tensorflow", "tensorflow_datasets", "orbax", "flax", "torch")
# Flags each entry point's --help must list (the distributed ones included).
EXPECTED_FLAGS = {
    "ferjax-train": ("--config", "--workdir", "--coordinator_address", "--num_processes"),
    "ferjax-eval": ("--config", "--workdir", "--distributed"),
    "ferjax-folds": ("--config", "--workdir", "--folds", "--process_id"),
    "ferjax-bench": ("--model", "--config", "--batch_size", "--torch"),
    "ferjax-convert": ("--arch", "--src", "--dst", "--class_order"),
    "ferjax-prepare": ("--manual_dir", "--data_dir", "--overwrite", "synthetic_fer"),
}


def _scripts() -> dict[str, str]:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["scripts"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
  """A folder holding only the `ferjax` package, as site-packages after `pip install .`:
  the repository's top-level `configs/` is not importable from it."""
  folder = tmp_path_factory.mktemp("site")
  os.symlink(os.path.join(REPO, "ferjax"), folder / "ferjax")
  return str(folder)


def _python(args: list[str], *, site: str, cwd: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=site)
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=120)


def test_console_scripts():
  assert set(_scripts()) == set(EXPECTED_FLAGS) | {"ferjax-predict", "ferjax-export",
                                                    "ferjax-aot"}


@pytest.mark.parametrize("script", sorted(_scripts()))
def test_help_is_fast_complete_and_exits_0(script, site, tmp_path):
  module, _, function = _scripts()[script].partition(":")
  if importlib.util.find_spec(module) is None:
    pytest.skip(f"{module} is not in this checkout")
  # What the console-script wrapper does, plus a report of the ML modules loaded.
  code = (f"import atexit, sys\n"
          f"atexit.register(lambda: print('LOADED:', sorted(m for m in {HEAVY!r} "
          f"if m in sys.modules)))\n"
          f"sys.argv = [{script!r}, '--help']\n"
          f"from {module} import {function}\n{function}()\n")
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  result = _python(["-c", code], site=site, cwd=str(tmp_path))
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "LOADED: []" in result.stdout
  for flag in EXPECTED_FLAGS.get(script, ("--",)):
    assert flag in result.stdout, f"{script} --help does not list {flag}"
  # CPU time, not wall time: the check must hold on a CI machine shared with other jobs.
  seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  assert seconds < 3.0, f"{script} --help took {seconds:.1f} s of CPU"


def test_wrong_config_path_is_one_line_and_status_2(site, tmp_path):
  result = _python(["-m", "ferjax.main", "--config=/no/such/dir/resnet_typo.py:smoke",
                    f"--workdir={tmp_path / 'run'}"], site=site, cwd=str(tmp_path))
  assert result.returncode == 2
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("ferjax: error:") and "/no/such/dir/resnet_typo.py" in lines[0]
  assert "resnet" in lines[0] and "lstpnet" in lines[0]  # the packaged names are offered
  assert not (tmp_path / "run").exists()


def test_names_and_repository_files_load_from_another_directory(site, tmp_path):
  """Without the repository on sys.path: a packaged name, and a repository file
  (whose thin module imports the packaged config)."""
  code = ("import sys\nfrom absl import flags\nfrom ferjax import cli\n"
          "for arg in sys.argv[1:]:\n"
          "  values = flags.FlagValues()\n"
          "  cli.define_config_flag('config', flag_values=values)\n"
          "  values(['prog', arg])\n"
          "  print(values.config.dataset.name, values.config.dataset.fold)\n")
  result = _python(["-c", code, "--config=lstpnet:fold=2",
                    f"--config={REPO}/configs/resnet.py:smoke"], site=site, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split("\n")[:2] == ["dfew/official 2", "synthetic_fer/images_smoke 0"]


def test_resolve_prefers_an_existing_file_then_a_packaged_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  packaged = os.path.join(os.path.dirname(configs.__file__), "lstpnet.py")
  assert configs.resolve("lstpnet:fold=2") == packaged + ":fold=2"
  assert configs.resolve("lstpnet.py") == packaged
  (tmp_path / "lstpnet.py").write_text("")
  assert configs.resolve("lstpnet.py:fold=2") == "lstpnet.py:fold=2"
  with pytest.raises(ValueError, match="no config file 'nope.py'.*packaged: default, lstpnet"):
    configs.resolve("nope.py:fold=2")


def test_overrides_apply_to_a_packaged_name(monkeypatch):
  argv = ["prog", "--config=msfe:smoke", "--config.batch_size=8"]
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections finds overrides in sys.argv
  values = flags.FlagValues()
  cli.define_config_flag("config", flag_values=values)
  values(argv)
  assert values.config.batch_size == 8 and values.config.model.name == "msfe"


@pytest.mark.parametrize("name", [n for n in configs.NAMES if n != "default"])
def test_repository_files_are_the_packaged_configs(name):
  thin = importlib.import_module(f"configs.{name}")
  assert thin.get_config is importlib.import_module(f"ferjax.configs.{name}").get_config
