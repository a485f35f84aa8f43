"""Bad configs, config files and flags: one line `ferjax: error: ...`, exit 2, nothing lost.

Most rows call the checks in-process (`run_config.validate`, `errors.parse_flags`,
the resume checks); a representative subset runs the CLI against a tiny trained
workdir, written under a relative --workdir, whose checkpoints must not change.
"""

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from absl import flags

from configs import lstpnet, msfe, resnet, slm_aea, stse_resnet50
from ferjax import cli, errors, optim, paths, run_config
from conftest import REPO, TINY_IMAGE_OVERRIDES  # pylint: disable=g-bad-import-order

CONFIGS = {"resnet": resnet, "lstpnet": lstpnet, "msfe": msfe, "slm_aea": slm_aea,
           "stse": stse_resnet50}
DELETE = object()  # Row value: remove the field from the config.


def _config(name: str = "resnet", arg: str = "synthetic", overrides: dict | None = None):
  """A shipped config with `overrides` set as a config file could: any type, new fields."""
  config = ml_collections.ConfigDict(CONFIGS[name].get_config(arg).to_dict(), type_safe=False)
  for key, value in (overrides or {}).items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    if value is DELETE:
      delattr(node, leaf)
    else:
      node[leaf] = value
  return config


# (config, overrides, the error's expected text). {tmp} is a fresh directory
# holding `file.txt`, a regular file.
BAD_CONFIGS = [
    ("resnet", {"batch_size": -1}, "config.batch_size must be an integer >= 1, got -1"),
    ("resnet", {"batch_size": 0}, "config.batch_size must be an integer >= 1, got 0"),
    ("resnet", {"batch_size": 1.5}, "config.batch_size must be an integer >= 1, got 1.5"),
    ("resnet", {"batch_size": "64"}, "config.batch_size must be an integer >= 1, got '64'"),
    ("resnet", {"eval_batch_size": 0}, "config.eval_batch_size must be an integer >= 1"),
    ("resnet", {"eval_batch_size": -64}, "config.eval_batch_size must be an integer >= 1"),
    ("resnet", {"input.image_size": 0}, "config.input.image_size must be an integer >= 1"),
    ("resnet", {"input.image_size": -8}, "config.input.image_size must be an integer >= 1"),
    ("resnet", {"input.resize_size": 30},
     "config.input.resize_size=30 is smaller than config.input.image_size=64"),
    ("resnet", {"input.train_crop": "center"},
     "config.input.train_crop must be one of 'random_crop', 'random_resized_crop', 'none'"),
    ("resnet", {"input.mean": (0.5, 0.5)}, "config.input.mean must be a tuple of 3 values"),
    ("resnet", {"input.mean": (0.5, 0.5, "a")}, "config.input.mean must be a tuple of 3"),
    ("resnet", {"input.std": (0.2, 0.2, 0.0)}, r"config.input.std must be .* each a number > 0"),
    ("resnet", {"input.std": (0.2,) * 4}, "config.input.std must be a tuple of 3 values"),
    ("resnet", {"input.random_erasing": 1.5},
     r"config.input.random_erasing must be a number in \[0.0, 1.0\], got 1.5"),
    ("resnet", {"input.random_erasing": -0.1}, "config.input.random_erasing must be a number"),
    ("resnet", {"input.erasing_scale": (0.3, 0.1)}, "erasing_scale=.* must be .* low <= high"),
    ("resnet", {"input.erasing_scale": (0.1,)}, "config.input.erasing_scale must be a tuple of 2"),
    ("resnet", {"input.gaussian_noise_var": -1.0}, "config.input.gaussian_noise_var must be"),
    ("resnet", {"input.hflip": 1}, "config.input.hflip must be True or False, got 1"),
    ("resnet", {"dataset.kind": "clip"}, "config.model.name='resnet' reads images, but "
                                         "config.dataset.kind='clip'"),
    ("resnet", {"dataset.kind": "video"}, "config.dataset.kind must be one of 'image', 'clip'"),
    ("resnet", {"dataset.name": ""}, "config.dataset.name must be a non-empty string"),
    ("resnet", {"dataset.num_classes": 1}, "config.dataset.num_classes must be an integer >= 2"),
    ("resnet", {"dataset.fold": -1}, "config.dataset.fold must be an integer >= 0"),
    ("resnet", {"dataset.data_dir": "{tmp}/file.txt/tfds"},
     "config.dataset.data_dir=.*file.txt is a file, not a directory"),
    ("resnet", {"dataset.data_dir": "{tmp}/file.txt"}, "file.txt is a file, not a directory"),
    ("resnet", {"schedule.warmup_epochs": -1.0},
     "config.schedule.warmup_epochs must be a number >= 0.0, got -1.0"),
    ("resnet", {"schedule.warmup_epochs": 10.0},
     "config.schedule.warmup_epochs=10.0 is longer than config.num_epochs=6"),
    ("resnet", {"schedule.name": "linear"}, "config.schedule.name must be one of 'constant'"),
    ("resnet", {"schedule.decay_rate": 0.0}, "config.schedule.decay_rate must be a number > 0"),
    ("resnet", {"schedule.step_epochs": 0}, "config.schedule.step_epochs must be an integer"),
    ("resnet", {"objective.label_smoothing": 2.0},
     r"config.objective.label_smoothing must be a number in \[0.0, 1.0\), got 2.0"),
    ("resnet", {"objective.label_smoothing": 1.0}, "config.objective.label_smoothing must be"),
    ("resnet", {"objective.name": "focal"}, "config.objective.name must be one of"),
    ("resnet", {"optimizer.grad_clip_norm": -1.0},
     "config.optimizer.grad_clip_norm must be a number >= 0.0, got -1.0"),
    ("resnet", {"optimizer.name": "lamb"}, "config.optimizer.name must be one of 'sgd', 'adam'"),
    ("resnet", {"optimizer.momentum": 1.0}, r"config.optimizer.momentum must be .*1.0\)"),
    ("resnet", {"optimizer.b2": 1.5}, "config.optimizer.b2 must be a number in"),
    ("resnet", {"optimizer.learning_rate": float("nan")},
     "config.optimizer.learning_rate must be a number >= 0.0, got nan"),
    ("resnet", {"optimizer.learning_rate": -0.1}, "config.optimizer.learning_rate must be"),
    ("resnet", {"optimizer.weight_decay": -1e-4}, "config.optimizer.weight_decay must be"),
    ("resnet", {"model.name": "vit"}, "config.model.name must be one of .*'resnet', .*got 'vit'"),
    ("resnet", {"model.depth": 20}, "config.model.depth must be one of 10, 18, 34, 50"),
    ("resnet", {"model.dtype": "float16"}, "config.model.dtype must be one of 'float32'"),
    ("resnet", {"seed": -1}, "config.seed must be an integer >= 0, got -1"),
    ("resnet", {"num_epochs": -3}, "config.num_epochs must be an integer >= 1, got -3"),
    ("resnet", {"num_epochs": 0}, "config.num_epochs must be an integer >= 1, got 0"),
    ("resnet", {"log_every_steps": 0}, "config.log_every_steps must be an integer >= 1"),
    ("resnet", {"tensorboard": "no"}, "config.tensorboard must be True or False, got 'no'"),
    ("resnet", {"tensorboard": False, "profile_steps": 2},
     "config.profile_steps=2 writes a trace for TensorBoard's Profile tab, but "
     "config.tensorboard=False"),
    ("resnet", {"eval_every_epochs": 0}, "config.eval_every_epochs must be an integer >= 1"),
    ("resnet", {"checkpoint_every_steps": -5}, "config.checkpoint_every_steps must be"),
    ("resnet", {"keep_checkpoints": 0}, "config.keep_checkpoints must be an integer >= 1"),
    ("resnet", {"eval_checkpoint": "last"}, "config.eval_checkpoint must be one of 'latest'"),
    ("resnet", {"best_metric": "accuracy"},
     "config.best_metric must be one of 'war', 'uar', 'war_plus_uar', got 'accuracy'"),
    ("stse", {"evals.pose.buckets": (30.0, 0.0)}, "config.evals.pose.buckets=.* strictly"),
    ("stse", {"evals.pose.buckets": (30.0, "a")}, "config.evals.pose.buckets must be a tuple"),
    ("resnet", {"evals.top_k": {"k": 2}}, "config.evals.top_k: no such evaluator"),
    ("resnet", {"evals.embedding": {"dim": 2}}, "config.evals.embedding.dim is not a field"),
    ("resnet", {"evals.classification": DELETE}, "config.evals must hold 'classification'"),
    ("slm_aea", {"evals.aea": DELETE}, "config.model.aea.enabled and config.evals.aea go"),
    ("resnet", {"objective.momentum": 0.5}, "config.objective.momentum is not a field"),
    ("resnet", {"init_class_order": "imagenet"}, "config.init_class_order must be one of"),
    ("resnet", {"init_from": "{tmp}/missing.pth"}, "config.init_from=.*missing.pth does not"),
    ("resnet", {"init_from": "{tmp}/file.txt"},
     r"init_from takes a ferjax workdir .* PyTorch weights file \(.pth, .pt"),
    ("resnet", {"batchsize": 3}, "config.batchsize is not a field ferjax reads"),
    ("resnet", {"eval_batch_size": DELETE}, "config.eval_batch_size is missing"),
    ("lstpnet", {"input.num_frames": 0}, "config.input.num_frames must be an integer >= 1"),
    ("lstpnet", {"dataset.kind": "image"},
     "config.model.name='lstpnet' reads clips, but config.dataset.kind='image'"),
    ("lstpnet", {"input.num_frames": 12},
     "config.input.num_frames=12 must be a multiple of config.input.num_segments=8"),
    ("lstpnet", {"model.lstpnet.heads": 0}, "config.model.lstpnet.heads must be an integer"),
    ("msfe", {"model.msfe.attention": "cbam"}, "config.model.msfe.attention must be one of"),
    ("msfe", {"objective.ccl.ema_rate": 2.0}, "config.objective.ccl.ema_rate must be a number"),
    ("msfe", {"optimizer.lr_multipliers.centers": -1.0},
     "config.optimizer.lr_multipliers.centers must be a number >= 0.0"),
    ("stse", {"model.stse.stages": (0, 5)}, "config.model.stse.stages must be a tuple"),
    ("slm_aea", {"objective.p": 1.0}, r"config.objective.p must be a number in \(0.0, 1.0\)"),
    ("slm_aea", {"model.aea.eval_mode": "mean"}, "config.model.aea.eval_mode must be one of"),
]


@pytest.mark.parametrize("name, overrides, message", BAD_CONFIGS,
                         ids=[f"{n}:{','.join(o)}" for n, o, _ in BAD_CONFIGS])
def test_bad_config_is_refused_in_one_line(tmp_path, name, overrides, message):
  (tmp_path / "file.txt").write_text("not weights")
  overrides = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v
               for k, v in overrides.items()}
  config = _config(name, "synthetic", overrides)
  with pytest.raises(errors.UserError, match=message) as caught:
    run_config.validate(config)
  assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name, arg", [
    ("resnet", "synthetic"), ("resnet", "rafdb,depth=50"), ("resnet", "affectnet,classes=8"),
    ("lstpnet", None), ("lstpnet", "synthetic_window,baseline"), ("lstpnet", "afew"),
    ("msfe", None), ("msfe", "synthetic,ce"), ("stse", "bu3dfe,protocol=p2"),
    ("stse", "synthetic,plain"), ("slm_aea", "rafdb"), ("slm_aea", "synthetic,backbone=msfe"),
    ("slm_aea", "synthetic,backbone=stse_resnet"), ("slm_aea", "synthetic,ce"),
])
def test_shipped_configs_pass_the_schema(name, arg):
  """Every field of the shipped configs has a SCHEMA rule its value passes."""
  run_config.validate(CONFIGS[name].get_config(arg))


def test_validate_makes_path_fields_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  (tmp_path / "home").mkdir()
  (tmp_path / "home" / "w.pth").write_bytes(b"")
  config = _config(overrides={"dataset.data_dir": "data/tfds", "init_from": "~/w.pth"})
  run_config.validate(config)
  assert config.dataset.data_dir == str(tmp_path / "data" / "tfds")
  assert config.init_from == str(tmp_path / "home" / "w.pth")


def test_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", "/home/someone")
  assert paths.absolute("runs/x", "--workdir") == str(tmp_path / "runs" / "x")
  assert paths.absolute("~/x", "--workdir") == "/home/someone/x"
  assert paths.absolute("./a/../b", "--workdir") == str(tmp_path / "b")
  assert paths.absolute("gs://bucket/run", "--workdir") == "gs://bucket/run"
  for empty in ("", "  "):
    with pytest.raises(errors.UserError, match="--workdir is empty"):
      paths.absolute(empty, "--workdir")
  (tmp_path / "f").write_text("")
  with pytest.raises(errors.UserError, match=r"--workdir=f/x is not writable: .*/f is a file"):
    paths.absolute("f/x", "--workdir")
  with pytest.raises(errors.UserError, match="--workdir=f is a file, not a directory"):
    paths.absolute("f", "--workdir")
  assert paths.absolute("f", "config.init_from", directory=False) == str(tmp_path / "f")


# Command lines refused while parsing flags: (argv after the program, expected line).
BAD_FLAGS = [
    (["--config={tmp}/missing.py"], "no config file '{tmp}/missing.py' (from "),
    (["--config={tmp}"], "no config file '{tmp}' (from "),
    (["--config=resnet:bogus"], "unknown config argument 'bogus'"),
    (["--config={tmp}/syntax.py"],
     "config file {tmp}/syntax.py, line 1: SyntaxError: invalid syntax"),
    (["--config={tmp}/returns_dict.py"],
     "--config: get_config() of {tmp}/returns_dict.py returned a dict, not an "
     "ml_collections.ConfigDict"),
    (["--config=configs/resnet.py:synthetic", "--config.batchsize=3"],
     "unknown config field 'batchsize'; did you mean 'batch_size'?"),
    (["--config=configs/resnet.py:synthetic", "--config.model.deph=3"],
     "unknown config field 'deph'; did you mean 'depth'?"),
    (["--config=configs/resnet.py:synthetic", "--config.batch_size=1.5"],
     "flag --config.batch_size=1.5: invalid literal for int() with base 10: '1.5'"),
    (["--config=configs/resnet.py:bogus"],
     "flag --config=configs/resnet.py:bogus: Error whilst parsing config file: ValueError: "
     "unknown config argument 'bogus'; known: affectnet, classes, depth, ferplus, rafdb, "
     "sfew, smoke, synthetic"),
    (["--config=configs/resnet.py"], "ValueError: configs/resnet.py needs a dataset"),
    (["--config=configs/lstpnet.py:fold=9"],
     "ValueError: configs/lstpnet.py: fold=9 must be 1..5 (DFEW folds)"),
]


def _bad_config_files(directory) -> None:
  (directory / "syntax.py").write_text("def get_config(:\n")
  (directory / "returns_dict.py").write_text("def get_config():\n  return {'batch_size': 8}\n")


@pytest.mark.parametrize("args, line", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_exit_2_with_one_line(tmp_path, monkeypatch, capsys, args, line):
  _bad_config_files(tmp_path)
  monkeypatch.chdir(REPO)
  argv = ["ferjax"] + [a.format(tmp=tmp_path) for a in args]
  flag_values = flags.FlagValues()
  monkeypatch.setattr(sys, "argv", argv)  # Overrides are flags made from sys.argv.
  cli.define_config_flag("", flag_values=flag_values)
  with pytest.raises(SystemExit) as caught:
    errors.parse_flags(argv, flag_values)
  assert caught.value.code == 2
  stderr = capsys.readouterr().err
  assert stderr.splitlines() == [stderr.strip()]
  assert stderr.startswith("ferjax: error: ")
  assert line.format(tmp=tmp_path) in stderr


def _workdir_with_checkpoint(tmp_path, config) -> str:
  (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
  (tmp_path / "checkpoints" / "18").mkdir(parents=True)
  return str(tmp_path)


@pytest.mark.parametrize("recorded, changed, message", [
    ({}, {"optimizer.grad_clip_norm": 1.0},
     r"config.optimizer.grad_clip_norm=0.0, this command has 1.0: that adds or removes"),
    ({"optimizer.grad_clip_norm": 1.0}, {"optimizer.grad_clip_norm": 0.0},
     "config.optimizer.grad_clip_norm=1.0, this command has 0.0"),
    ({}, {"optimizer.momentum": 0.0}, "config.optimizer.momentum=0.9, this command has 0.0"),
    ({}, {"optimizer.lr_multipliers.conv": 2.0},
     "config.optimizer.lr_multipliers.conv='unset', this command has 2.0"),
])
def test_resume_that_changes_the_optimizer_state_is_refused(tmp_path, recorded, changed,
                                                            message):
  workdir = _workdir_with_checkpoint(tmp_path, _config(overrides=recorded))
  with pytest.raises(errors.UserError, match=message):
    run_config.check_resumable(_config(overrides={**recorded, **changed}), workdir)
  with pytest.raises(errors.UserError, match=message):
    run_config.check_evaluable(_config(overrides={**recorded, **changed}), workdir)


def test_resume_keeps_optimizer_changes_that_leave_its_state_alone(tmp_path):
  workdir = _workdir_with_checkpoint(tmp_path, _config(overrides={"optimizer.grad_clip_norm": 1.0}))
  run_config.check_resumable(_config(overrides={
      "optimizer.grad_clip_norm": 5.0, "optimizer.momentum": 0.5, "optimizer.nesterov": True,
      "optimizer.learning_rate": 0.01, "num_epochs": 2}), workdir)


def _state_structure(overrides: dict):
  config = _config(overrides=overrides)
  params = {"conv": {"kernel": jnp.ones((3,))}, "fc": {"bias": jnp.ones((2,))}}
  schedule = optim.make_schedule(config.schedule, 0.1, 10, 2)
  return jax.tree.structure(optim.make_optimizer(config, schedule, params).init(params))


@pytest.mark.parametrize("overrides", [
    {"optimizer.grad_clip_norm": 1.0}, {"optimizer.momentum": 0.0},
    {"optimizer.lr_multipliers.conv": 2.0}, {"optimizer.nesterov": True},
    {"optimizer.learning_rate": 0.01}, {"optimizer.weight_decay": 0.0},
    {"schedule.name": "constant"}, {"optimizer.no_decay": ("fc",)},
    {"optimizer.name": "adam", "optimizer.momentum": 0.0},
])
def test_state_layout_table_matches_the_optimizer(overrides):
  """optimizer_state_layout flags exactly the changes that change the state's tree."""
  base = {"optimizer.name": overrides.get("optimizer.name", "sgd")}
  layout = lambda o: run_config.optimizer_state_layout(run_config.flatten(_config(overrides=o)))
  layout_changed = layout(base) != layout({**base, **overrides})
  assert layout_changed == (_state_structure(base) != _state_structure({**base, **overrides}))


def test_eval_only_refuses_another_architecture_or_input_size(tmp_path):
  workdir = _workdir_with_checkpoint(tmp_path, _config())
  with pytest.raises(errors.UserError, match=r"config.model.depth=18, this command has 34; "
                                             "evaluate with the same value"):
    run_config.check_evaluable(_config(overrides={"model.depth": 34, "eval_only": True}),
                               workdir)
  with pytest.raises(errors.UserError, match="config.input.image_size=64, this command has 32"):
    run_config.check_evaluable(_config(overrides={"input.image_size": 32,
                                                  "input.resize_size": 36}), workdir)
  # The data order does not matter to an evaluation.
  run_config.check_evaluable(_config(overrides={"batch_size": 8, "seed": 3}), workdir)


# ---------------------------------------------------------------- the CLI, end to end


def _spawn(args, *, cwd, data_dir, home, module="ferjax.main"):
  env = dict(os.environ, TFDS_DATA_DIR=data_dir, HOME=home, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def _checkpoint_hashes(workdir: str) -> dict[str, str]:
  hashes = {}
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        hashes[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return hashes


CONFIG = f"--config={REPO}/configs/resnet.py:synthetic"
TINY = TINY_IMAGE_OVERRIDES[:-2] + ("--config.num_epochs=2",)
# (id, argv after the program, expected text of the one error line); run from a
# directory holding runs/tiny (trained, relative) with HOME set to that directory.
# One row per failure path of the commands; BAD_CONFIGS checks every rule in process.
CLI_ROWS = [
    ("batch_zero", [CONFIG, "--workdir=runs/tiny", *TINY, "--config.batch_size=0"],
     "config.batch_size must be an integer >= 1, got 0"),
    ("missing_config", ["--config=nope.py", "--workdir=runs/tiny"],
     "no config file 'nope.py' (from "),
    ("syntax_error", ["--config=syntax.py", "--workdir=runs/tiny"],
     "config file syntax.py, line 1: SyntaxError: invalid syntax"),
    ("did_you_mean", [CONFIG, "--workdir=runs/tiny", "--config.batchsize=3"],
     "unknown config field 'batchsize'; did you mean 'batch_size'?"),
    ("empty_workdir", [CONFIG, "--workdir=", *TINY], "--workdir is empty"),
    ("resume_clip_on", [CONFIG, "--workdir=runs/tiny", *TINY,
                        "--config.optimizer.grad_clip_norm=1.0"],
     "config.optimizer.grad_clip_norm=0.0, this command has 1.0"),
    ("eval_other_depth_tilde", [CONFIG, "--workdir=~/runs/tiny", *TINY, "--config.eval_only=True",
                                "--config.model.depth=34"],
     "config.model.depth=18, this command has 34; evaluate with the same value"),
    ("batch_over_dataset", [CONFIG, "--workdir=runs/new", *TINY, "--config.batch_size=4096",
                            "--config.eval_batch_size=4096"],
     "config.batch_size=4096 is larger than the"),
    ("folds_empty_workdir", [f"--config={REPO}/configs/lstpnet.py:synthetic", "--workdir="],
     "--workdir is empty"),
]


@pytest.fixture(scope="module")
def cli_runs(tfds_data_dir, tmp_path_factory):
  """Trains runs/tiny under a relative --workdir, then runs CLI_ROWS against it (2 at a time).

  Returns (results by row id, checkpoint hashes before the rows, after them and a rerun
  with fewer epochs, that rerun, the workdir).
  """
  root = tmp_path_factory.mktemp("cli")
  _bad_config_files(root)
  home = str(root)

  def run(row):
    name, args, _ = row
    module = "ferjax.folds" if name.startswith("folds") else "ferjax.main"
    return name, _spawn(args, cwd=root, data_dir=tfds_data_dir, home=home, module=module)

  on_tiny = [row for row in CLI_ROWS if any("runs/tiny" in arg for arg in row[1])]
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    # The rows that do not name runs/tiny run while it trains, one at a time.
    elsewhere = pool.submit(lambda: [run(row) for row in CLI_ROWS if row not in on_tiny])
    trained = _spawn([CONFIG, "--workdir=runs/tiny", *TINY], cwd=root, data_dir=tfds_data_dir,
                     home=home)
    assert trained.returncode == 0, trained.stderr[-3000:]
    workdir = str(root / "runs" / "tiny")
    before = _checkpoint_hashes(workdir)
    results = dict(pool.map(run, on_tiny))
    results.update(elsewhere.result())
  # README: a rerun may lower num_epochs; the finished run only re-evaluates.
  lowered = _spawn([CONFIG, "--workdir=runs/tiny", *TINY[:-1], "--config.num_epochs=1"],
                   cwd=root, data_dir=tfds_data_dir, home=home)
  return results, before, _checkpoint_hashes(workdir), lowered, workdir


@pytest.mark.parametrize("name, line", [(n, l) for n, _, l in CLI_ROWS],
                         ids=[n for n, _, _ in CLI_ROWS])
def test_cli_refuses_in_one_line(cli_runs, name, line):
  result = cli_runs[0][name]
  assert result.returncode == 2, result.stderr[-3000:]
  error_lines = [l for l in result.stderr.splitlines() if l.startswith("ferjax: error:")]
  assert len(error_lines) == 1, result.stderr[-3000:]
  assert result.stderr.rstrip().splitlines()[-1] == error_lines[0]
  assert line in error_lines[0]
  assert "Traceback" not in result.stderr


def test_relative_workdir_trains_saves_and_nothing_is_touched(cli_runs):
  _, before, after, lowered, workdir = cli_runs
  assert sorted(before) and all(path.startswith("checkpoints/18") or path.startswith(
      "checkpoints/9") for path in before)
  assert after == before
  # Lowering num_epochs on a finished run re-evaluates its last checkpoint.
  assert lowered.returncode == 0, lowered.stderr[-3000:]
  assert json.loads(open(os.path.join(workdir, "final_metrics.json")).read())["step"] == 18
