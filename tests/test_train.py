"""Integration tests of the training loop through the real CLI on tiny synthetic data."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, TINY_IMAGE_OVERRIDES  # pylint: disable=g-bad-import-order

RESNET = "--config=configs/resnet.py:synthetic"


def _checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def _restore_params(workdir, step: int) -> dict:
  """The model's variables (params and BatchNorm statistics) and the objective's."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  state = ocp.StandardCheckpointer().restore(path)
  return {"model": state["model"], "objective": state["objective"]}


def _leaves(tree) -> list[np.ndarray]:
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_train_then_eval_only_reproduces_metrics(ferjax_cli, trained_image_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_image_run[0], workdir)  # The shared run stays as trained.
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    final = json.load(f)
  assert {"war", "uar", "per_class", "step", "confusion_matrix"} <= set(final)
  assert 0.0 <= final["uar"] <= 1.0 and 0.0 <= final["war"] <= 1.0
  assert set(final["per_class"]) <= set(final["class_names"])
  confusion = np.asarray(final["confusion_matrix"])
  assert confusion.sum() == final["num_examples"]
  assert final["war"] == pytest.approx(np.trace(confusion) / confusion.sum())
  assert os.path.exists(os.path.join(workdir, "confusion_matrix.png"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  assert _checkpoint_steps(workdir)[-1] == final["step"]

  os.remove(os.path.join(workdir, "final_metrics.json"))
  ferjax_cli([RESNET, f"--workdir={workdir}", *TINY_IMAGE_OVERRIDES,
              "--config.eval_only=True"])
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    assert json.load(f) == final


_LOSSES_SCRIPT = """
import json, sys
import jax, numpy as np
from configs import resnet
from ferjax import sharding, train
config = resnet.get_config("synthetic")
config.dataset.name = "synthetic_fer/images_small"
config.input.image_size, config.input.resize_size = 32, 36
config.batch_size, config.eval_batch_size = 32, 64
config.schedule.name, config.schedule.warmup_epochs = "constant", 0.0
config.optimizer.learning_rate = 0.01
experiment = train.Experiment(config, sys.argv[1])
iterator, state, losses = experiment.train_iterator(), experiment.state, []
for _ in range(3):
  state, metrics = experiment.train_step(
      state, sharding.to_global_batch(next(iterator), experiment.mesh))
  losses.append(float(metrics["loss"]))
params = [np.asarray(x).tolist() for x in jax.tree.leaves(train.split_params(state)[0])[-2:]]
print(json.dumps({"devices": jax.device_count(), "losses": losses, "params": params}))
"""


def test_one_and_eight_devices_give_the_same_losses(tfds_data_dir, tmp_path):
  # Same global batch: only the order of floating-point reductions differs, and
  # early training amplifies that, so a few steps are compared.
  # The two runs are independent: side by side they share the cores.
  runs = [subprocess.Popen([sys.executable, "-c", _LOSSES_SCRIPT, str(tmp_path / str(devices))],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, TFDS_DATA_DIR=tfds_data_dir,
                                    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                                    JAX_PLATFORMS="cpu"))
          for devices in (1, 8)]
  results = []
  for run in runs:
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    results.append(json.loads(stdout.strip().splitlines()[-1]))
  assert [r["devices"] for r in results] == [1, 8]
  np.testing.assert_allclose(results[0]["losses"][:2], results[1]["losses"][:2], rtol=1e-5)
  np.testing.assert_allclose(results[0]["losses"], results[1]["losses"], rtol=2e-2)
  for a, b in zip(results[0]["params"], results[1]["params"]):
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=1e-3)


@pytest.mark.parametrize("extra, expected", [
    (["--config.no_such_key=1"], "no_such_key"),
    (["--config.batch_size=many"], "batch_size"),
    (["--config.dataset.name=rafdb"], "python -m ferjax.data.prepare rafdb"),
    (["--config.model.depth=19"], "model.depth"),
    (["--config.optimizer.learning_rate=1e30"], "at step"),
    (["--config.optimizer.name=sgdd"], "config.optimizer.name must be one of"),
])
def test_user_errors_are_one_line(ferjax_cli, tmp_path, extra, expected):
  result = ferjax_cli([RESNET, f"--workdir={tmp_path / 'run'}", *TINY_IMAGE_OVERRIDES, *extra],
                      check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("ferjax: error:")]
  assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]


def test_bad_config_argument_is_one_line(ferjax_cli, tmp_path):
  result = ferjax_cli(["--config=configs/resnet.py:synthetic,bogus=1",
                       f"--workdir={tmp_path / 'run'}"], check=False)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.splitlines()[-1].startswith(
      "ferjax: error: flag --config=configs/resnet.py:synthetic,bogus=1: ")
  assert result.stderr.splitlines()[-1].endswith("unknown config argument 'bogus'; known: "
                                                 "affectnet, classes, depth, ferplus, rafdb, "
                                                 "sfew, smoke, synthetic")


def test_unwritable_workdir_is_one_line(ferjax_cli, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  result = ferjax_cli([RESNET, f"--workdir={blocker / 'run'}", *TINY_IMAGE_OVERRIDES],
                      check=False)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert "is not writable" in result.stderr.splitlines()[-1]


def test_nan_loss_keeps_checkpoints_finite(ferjax_cli, tmp_path):
  workdir = str(tmp_path / "run")
  result = ferjax_cli([RESNET, f"--workdir={workdir}", *TINY_IMAGE_OVERRIDES,
                       "--config.num_epochs=3", "--config.checkpoint_every_steps=2",
                       "--config.optimizer.learning_rate=1e4",
                       "--config.schedule.warmup_epochs=2"], check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "ferjax: error: loss is" in result.stderr
  steps = _checkpoint_steps(workdir) if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
  for step in steps:
    assert all(np.isfinite(x).all() for x in _leaves(_restore_params(workdir, step)))


def test_slm_aea_reports_every_eval_mode_and_the_mined_labels(ferjax_cli, tmp_path):
  workdir = tmp_path / "slm"
  ferjax_cli(["--config=configs/slm_aea.py:synthetic", f"--workdir={workdir}",
              *TINY_IMAGE_OVERRIDES, "--config.batch_size=48"])
  with open(workdir / "final_metrics.json") as f:
    metrics = json.load(f)
  modes = metrics["aea_eval_modes"]
  # The headline is the configured mode (batch_independent, the fixed mean).
  assert metrics["war"] == modes["batch_independent"]["war"]
  shuffled = modes["batch_shuffled"]
  assert shuffled["seeds"] == [0, 1, 2, 3, 4] and len(shuffled["war_per_seed"]) == 5
  np.testing.assert_allclose(shuffled["war"], np.mean(shuffled["war_per_seed"]))
  np.testing.assert_allclose(shuffled["war_std"], np.std(shuffled["war_per_seed"], ddof=1))
  assert 0.0 <= modes["code_faithful"]["war"] <= 1.0
  mined = np.load(workdir / "soft_labels.npz")
  assert mined["soft_label"].shape == (len(mined["id"]), 7)
  np.testing.assert_allclose(mined["soft_label"].sum(1), 1.0, rtol=1e-5)
