"""gs:// runs against a local GCS emulator (tests/gcs_emulator.py).

Each storage library is pointed at the emulator through its documented setting
(`gcs_emulator.environment`): gcsfs (etils.epath with EPATH_USE_TF=false:
workdir files, TFDS metadata) STORAGE_EMULATOR_HOST; TensorStore (Orbax
checkpoint arrays) TENSORSTORE_GCS_HTTP_URL with GOOGLE_AUTH_TOKEN_FOR_TESTING;
google-cloud-cpp (ArrayRecord reads of TFDS data) CLOUD_STORAGE_EMULATOR_ENDPOINT.
TensorFlow's own GCS client (the TensorBoard writer) has no endpoint setting,
so the whole run has `config.tensorboard=False` (docs/scaling.md).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import REPO, TINY_IMAGE_OVERRIDES  # pylint: disable=g-bad-import-order

pytest.importorskip("gcp_storage_emulator")
gcsfs_core = pytest.importorskip("gcsfs.core")
import gcs_emulator  # pylint: disable=g-bad-import-order,wrong-import-position

BUCKET = "ferjax-test"

# Runs in a fresh process, so that every library reads the emulator settings.
_CLIENT = textwrap.dedent("""
    import numpy as np, orbax.checkpoint as ocp
    from array_record.python import array_record_module
    from etils import epath
    run = epath.Path("gs://BUCKET/run")
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text('{"seed": 0}')
    assert (run / "config.json").read_text() == '{"seed": 0}'
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int32(7)}
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(run / "checkpoints" / "7" / "state", state)
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(run / "checkpoints" / "7" / "state")
    np.testing.assert_array_equal(restored["w"], state["w"])
    local = "LOCAL"
    writer = array_record_module.ArrayRecordWriter(local, "group_size:1")
    for record in (b"a", b"bc"):
      writer.write(record)
    writer.close()
    (run / "data.array_record").write_bytes(open(local, "rb").read())
    reader = array_record_module.ArrayRecordReader("gs://BUCKET/run/data.array_record")
    assert reader.read_all() == [b"a", b"bc"]
    print("OK")
""")


@pytest.fixture(scope="module")
def emulator_url():
  with gcs_emulator.serve(BUCKET) as url:
    yield url


def test_workdir_checkpoint_and_array_record_on_emulated_gcs(emulator_url, tmp_path):
  env = dict(os.environ, **gcs_emulator.environment(emulator_url))
  code = _CLIENT.replace("BUCKET", BUCKET).replace("LOCAL", str(tmp_path / "d.array_record"))
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


# 9 steps (one epoch of images_small), a checkpoint every 2; `trained_image_run`
# trains the same run on local disk without interruption. A save waits for the one
# before it: once step 2 is committed, two more saves pass before the last step, so
# the SIGTERM lands mid-run even when the poll waits on the busy emulator.
TOTAL_STEPS = 9


def _ferjax(args: list[str], env: dict, **kwargs) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "ferjax.main", *args], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          **kwargs)


def test_train_sigterm_resume_and_eval_only_on_emulated_gcs(emulator_url, tfds_data_dir,
                                                            trained_image_run, tmp_path):
  fs = gcsfs_core.GCSFileSystem(endpoint_url=emulator_url, token="anon",
                                skip_instance_cache=True)
  fs.put(os.path.join(tfds_data_dir, "synthetic_fer", "images_small"),
         f"{BUCKET}/tfds/synthetic_fer/images_small", recursive=True)
  run = f"{BUCKET}/whole_run"
  args = ["--config=configs/resnet.py:synthetic", *TINY_IMAGE_OVERRIDES,
          "--config.tensorboard=False",
          f"--workdir=gs://{run}", f"--config.dataset.data_dir=gs://{BUCKET}/tfds"]
  # Compiled steps come from the session's XLA cache (conftest.py).
  env = dict(os.environ, JAX_PLATFORMS="cpu", **gcs_emulator.environment(emulator_url))

  def committed(step: int) -> bool:
    fs.invalidate_cache()
    return fs.exists(f"{run}/checkpoints/{step}/commit_success.txt")

  def final_metrics() -> dict:
    fs.invalidate_cache()
    return json.loads(fs.cat(f"{run}/final_metrics.json"))

  # SIGTERM once the first checkpoint is in the bucket.
  process = _ferjax([*args, "--config.checkpoint_every_steps=2"], env)
  deadline = time.monotonic() + 300
  while not committed(2):
    assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 143, stderr[-3000:]
  assert "Traceback" not in stderr and "googleapis.com" not in stderr
  (stop_line,) = [line for line in stderr.splitlines() if line.startswith("ferjax:")]
  assert stop_line.startswith("ferjax: stopped by SIGTERM at step "), stop_line
  stopped_at = int(stop_line.split("at step ")[1].split(";")[0])
  assert 2 <= stopped_at < TOTAL_STEPS and committed(stopped_at)
  assert not fs.exists(f"{run}/final_metrics.json")

  # The rerun (saving only at the end: the save cadence may change on resume) resumes
  # from that step and finishes; its metrics are the uninterrupted run's.
  process = _ferjax(args, env)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  assert f"Resumed from step {stopped_at}." in stderr
  # No TensorFlow or XLA GCS client tried Google's endpoint (they log curl errors).
  assert "Traceback" not in stderr and "googleapis.com" not in stderr
  assert "  TensorBoard: " not in stderr
  assert committed(TOTAL_STEPS)
  assert not fs.glob(f"{run}/events.out.tfevents*") and not fs.exists(f"{run}/ferjax.lock")
  metrics = final_metrics()
  with open(os.path.join(trained_image_run[0], "final_metrics.json")) as f:
    reference = json.load(f)
  assert metrics["step"] == TOTAL_STEPS
  for key in ("war", "uar", "per_class", "confusion_matrix", "num_examples"):
    assert metrics[key] == reference[key], key

  # Eval-only of the last checkpoint rewrites the same metrics.
  fs.rm(f"{run}/final_metrics.json")
  process = _ferjax([*args, "--config.eval_only=True"], env)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  assert "Traceback" not in stderr and "googleapis.com" not in stderr
  assert final_metrics() == metrics
