"""The storage libraries of a gs:// run, pointed at a local GCS emulator.

Each library is pointed at the emulator through its documented setting:
gcsfs (etils.epath with EPATH_USE_TF=false: workdir files, TFDS metadata)
STORAGE_EMULATOR_HOST; TensorStore (Orbax checkpoint arrays)
TENSORSTORE_GCS_HTTP_URL with GOOGLE_AUTH_TOKEN_FOR_TESTING; google-cloud-cpp
(ArrayRecord reads of TFDS data) CLOUD_STORAGE_EMULATOR_ENDPOINT. TensorFlow's
own GCS client (the TensorBoard writer) has no endpoint setting, so a whole
training run cannot use the emulator (docs/scaling.md).
"""

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("gcp_storage_emulator")

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


def test_workdir_checkpoint_and_array_record_on_emulated_gcs(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  server = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start",
                             "--host=127.0.0.1", f"--port={port}", "--in-memory", "-q",
                             f"--default-bucket={BUCKET}"], stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 30
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        assert time.time() < deadline and server.poll() is None, "emulator did not start"
        time.sleep(0.2)
    env = dict(os.environ, STORAGE_EMULATOR_HOST=url, EPATH_USE_TF="false",
               TENSORSTORE_GCS_HTTP_URL=url, GOOGLE_AUTH_TOKEN_FOR_TESTING="emulator",
               CLOUD_STORAGE_EMULATOR_ENDPOINT=url)
    code = _CLIENT.replace("BUCKET", BUCKET).replace("LOCAL", str(tmp_path / "d.array_record"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
  finally:
    server.terminate()
    server.wait(timeout=30)
