"""A new method as plug-ins (tests/plugins): objective with per-example state + evaluator.

Registered through the registries' public API, without touching ferjax's
trainer, evaluation runner or optimizer code; trained through the CLI, resumed
bitwise after SIGTERM, its evaluator's metrics in final_metrics.json. This is
also the suite's SIGTERM-resume test of the train loop (model, objective and
optimizer state, weight EMA, data position), with gradient accumulation so that
the SIGTERM may land between the micro-batches of an update, and of eval-only
on the EMA weights.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx, traverse_util

from conftest import REPO, TINY_IMAGE_OVERRIDES  # pylint: disable=g-bad-import-order
from ferjax.objectives import registry as objective_registry
from plugins import ema_targets, top_k


def test_ema_targets_loss_and_update_hand_computed():
  context = objective_registry.TrainContext(2, 8, 1, 3, read_labels=lambda: np.zeros(3))
  config = ml_collections.ConfigDict({"momentum": 0.5, "weight": 0.5})
  objective = ema_targets.from_config(config, context, rngs=nnx.Rngs(0))
  batch = {"index": jnp.array([2, 0]), "label": jnp.array([0, 1]),
           "mask": jnp.array([True, False])}
  outputs = {"logits": jnp.array([[math.log(3.0), 0.0], [5.0, 0.0]])}
  loss, _ = objective(outputs, batch, jnp.asarray(0))
  # target = 0.5 [1, 0] + 0.5 [0.5, 0.5] = [0.75, 0.25]; p = softmax = [0.75, 0.25].
  assert float(loss) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)),
                                      rel=1e-6)
  objective.update(outputs, batch, jnp.asarray(0))
  np.testing.assert_allclose(objective.table[...],
                             [[0.5, 0.5], [0.5, 0.5], [0.625, 0.375]], rtol=1e-6)


def test_top_k_evaluator_hand_computed():
  class Context:
    final, is_writer = False, False
  predictions = {"logits": np.array([[3.0, 2, 1], [1, 3, 2], [2, 1, 3]]),
                 "label": np.array([1, 0, 0])}
  result = top_k.TopK(2)(Context(), predictions)
  assert result == {"top_k": {"k": 2, "accuracy": pytest.approx(2 / 3)}}


def _steps(workdir) -> list[int]:
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def _final_metrics(workdir) -> dict:
  with open(os.path.join(workdir, "final_metrics.json")) as f:
    return json.load(f)


def _tail(log) -> str:
  log.seek(0)
  return log.read()[-3000:]


def _leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _state(workdir, step):
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "state"))


def test_plugin_method_trains_resumes_bitwise_and_reports(tfds_data_dir, tmp_path):
  env = dict(os.environ, TFDS_DATA_DIR=tfds_data_dir,
             PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
  command = [sys.executable, "-m", "plugins.main", "--config=tests/plugins/config.py",
             *TINY_IMAGE_OVERRIDES, "--config.num_epochs=2", "--config.batch_size=16",
             "--config.optimizer.accumulate_steps=2", "--config.ema.decay=0.8",
             "--config.checkpoint_every_steps=1000", "--config.eval_every_epochs=10"]
  # The reference run and the run stopped by SIGTERM run side by side, then the resume and
  # the reference's eval-only: each pair shares the start-up, and the states compared
  # below are bitwise equal whatever else runs beside them.
  reference, resumed = str(tmp_path / "reference"), str(tmp_path / "resumed")
  logs = [open(tmp_path / f"{name}.log", "w+") for name in ("reference", "eval_only")]
  full = subprocess.Popen([*command, f"--workdir={reference}"], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=logs[0])
  process = subprocess.Popen([*command, f"--workdir={resumed}"], cwd=REPO, env=env,
                             stderr=subprocess.PIPE, text=True)
  for line in process.stderr:  # Wait until the loop (and its SIGTERM handler) runs.
    if "Training " in line:
      break
  time.sleep(2.0)  # A SIGTERM before the first step ends stops after it (step >= 1).
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 143, stderr[-3000:]
  assert "Rerun the same command to resume" in stderr
  assert full.wait(timeout=600) == 0, _tail(logs[0])
  final_step = _steps(reference)[-1]
  assert 0 < _steps(resumed)[-1] < final_step
  trained = _final_metrics(reference)
  evaluate = subprocess.Popen([*command, f"--workdir={reference}", "--config.eval_only=True",
                               "--config.eval_ema=True"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=logs[1])
  result = subprocess.run([*command, f"--workdir={resumed}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert evaluate.wait(timeout=600) == 0, _tail(logs[1])
  for log in logs:
    log.close()

  a, b = _state(reference, final_step), _state(resumed, final_step)
  (table,) = _leaves(b["objective"])
  assert table.shape[1] == 7 and not np.allclose(table, 1.0 / 7)  # the per-example state moved
  assert int(a["step"]) == int(b["step"]) == final_step
  for name in ("model", "objective", "opt_state", "ema"):
    for x, y in zip(_leaves(a[name]), _leaves(b[name]), strict=True):
      np.testing.assert_array_equal(x, y)
  # The EMA holds every variable of the model (parameters, BatchNorm statistics).
  raw, averaged = (traverse_util.flatten_dict(a[k]) for k in ("model", "ema"))
  assert set(raw) == set(averaged)
  assert all(not np.array_equal(raw[k], averaged[k]) for k in raw
             if np.issubdtype(np.asarray(raw[k]).dtype, np.floating))
  np.testing.assert_array_equal(np.load(os.path.join(reference, "ema_targets.npy")),
                                np.load(os.path.join(resumed, "ema_targets.npy")))
  for metrics in (trained, _final_metrics(resumed)):
    assert metrics["top_k"]["k"] == 2 and metrics["top_k"]["accuracy"] >= metrics["war"]
  for workdir in (reference, resumed):
    assert os.path.exists(os.path.join(workdir, "top_k.json"))

  # Eval-only on the EMA weights reproduces the EMA metrics of training.
  evaluated = _final_metrics(reference)
  assert "ema" not in evaluated
  for key in ("war", "uar", "per_class", "confusion_matrix", "num_examples"):
    assert evaluated[key] == trained["ema"][key], key
