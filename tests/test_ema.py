"""Weight EMA (ferjax.ema): the update rule, and a run that resumes and evaluates it."""

import json
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
from flax import traverse_util

from conftest import REPO, TINY_IMAGE_OVERRIDES  # pylint: disable=g-bad-import-order
from ferjax import ema, errors


def test_ema_update_rule():
  average = {"w": jnp.asarray([1.0, -2.0]), "count": jnp.asarray(3, jnp.int32)}
  current = {"w": jnp.asarray([3.0, 2.0]), "count": jnp.asarray(5, jnp.int32)}
  moved = ema.update(average, current, 0.9)
  # 0.9 * 1 + 0.1 * 3 = 1.2; 0.9 * -2 + 0.1 * 2 = -1.6; integers are copied.
  np.testing.assert_allclose(moved["w"], [1.2, -1.6], rtol=1e-6)
  assert int(moved["count"]) == 5
  held = ema.update(average, current, 0.9, updated=jnp.asarray(False))
  np.testing.assert_array_equal(held["w"], average["w"])
  twice = ema.update(moved, current, 0.9)
  np.testing.assert_allclose(twice["w"], [0.9 * 1.2 + 0.3, 0.9 * -1.6 + 0.2], rtol=1e-6)
  copy = ema.init(current)
  assert copy["w"] is not current["w"]
  np.testing.assert_array_equal(copy["w"], current["w"])


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_ema_decay_out_of_range_is_refused(decay):
  with pytest.raises(errors.UserError, match="config.ema.decay"):
    ema.check_config(ml_collections.ConfigDict({"decay": decay}))


def _final_state(workdir: str) -> dict:
  directory = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(directory) if d.isdigit())
  return ocp.StandardCheckpointer().restore(os.path.join(directory, str(step), "state"))


def test_ema_resumes_bitwise_after_sigterm_and_eval_only_reproduces_it(
    ferjax_cli, tfds_data_dir, tmp_path):
  # Accumulation and Mixup/CutMix ride along: a SIGTERM may land between the
  # micro-batches of an update, and the mix must be redrawn identically.
  args = ["--config=configs/resnet.py:synthetic", *TINY_IMAGE_OVERRIDES,
          "--config.batch_size=16", "--config.optimizer.accumulate_steps=2",
          "--config.num_epochs=2", "--config.ema.decay=0.8", "--config.input.mixup_alpha=0.4",
          "--config.input.cutmix_alpha=1.0", "--config.checkpoint_every_steps=1000",
          "--config.eval_every_epochs=10"]
  reference = str(tmp_path / "reference")
  ferjax_cli([*args, f"--workdir={reference}"])

  resumed = str(tmp_path / "resumed")
  process = subprocess.Popen(
      [sys.executable, "-m", "ferjax.main", *args, f"--workdir={resumed}"], cwd=REPO,
      env=dict(os.environ, TFDS_DATA_DIR=tfds_data_dir), stderr=subprocess.PIPE, text=True)
  for line in process.stderr:  # Wait until the loop (and its SIGTERM handler) runs.
    if "Training " in line:
      break
  time.sleep(2.0)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 143, stderr[-3000:]
  ferjax_cli([*args, f"--workdir={resumed}"])
  want, got = _final_state(reference), _final_state(resumed)
  assert int(got["step"]) == int(want["step"]) > 0
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(a, b)
  # The EMA holds every variable of the model (parameters, BatchNorm statistics).
  raw, averaged = (traverse_util.flatten_dict(want[k]) for k in ("model", "ema"))
  assert set(raw) == set(averaged)
  assert all(not np.array_equal(raw[k], averaged[k]) for k in raw
             if np.issubdtype(np.asarray(raw[k]).dtype, np.floating))

  with open(os.path.join(reference, "final_metrics.json")) as f:
    trained = json.load(f)
  ferjax_cli([*args, f"--workdir={reference}", "--config.eval_only=True",
              "--config.eval_ema=True"])
  with open(os.path.join(reference, "final_metrics.json")) as f:
    evaluated = json.load(f)
  assert "ema" not in evaluated
  for key in ("war", "uar", "per_class", "confusion_matrix", "num_examples"):
    assert evaluated[key] == trained["ema"][key], key
