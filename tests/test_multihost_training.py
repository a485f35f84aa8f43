"""Multi-process training equals single-process training at the same global batch.

2 processes x 2 CPU devices (joined by ferjax.distributed) and 1 process x 4
CPU devices train the tiny synthetic ResNet for a few steps; per-step losses
and the final parameters must agree to float tolerance. The input pipeline
gives each process its slice of the same global batches, so only the order of
the cross-device reductions may differ.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO  # pylint: disable=g-bad-import-order

_SCRIPT = """
import json, sys
from ferjax import distributed
workdir, port, num_processes, process_id = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
joined = distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id,
                                initialization_timeout=300, heartbeat_timeout=60)
import jax, numpy as np
from configs import resnet
from ferjax import sharding, train
config = resnet.get_config("synthetic")
config.dataset.name = "synthetic_fer/images_small"
config.input.image_size, config.input.resize_size = 32, 36
config.batch_size, config.eval_batch_size = 32, 64
experiment = train.Experiment(config, workdir)
iterator, state, losses = experiment.train_iterator(), experiment.state, []
for _ in range(3):
  state, metrics = experiment.train_step(
      state, sharding.to_global_batch(next(iterator), experiment.mesh))
  losses.append(float(metrics["loss"]))
params = [np.asarray(x).tolist() for x in jax.tree.leaves(sharding.to_host(state.params))[-2:]]
print("RESULT " + json.dumps({"joined": joined, "processes": jax.process_count(),
                              "devices": jax.device_count(), "losses": losses,
                              "params": params}), flush=True)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(tmp_path, tfds_data_dir, num_processes: int,
           devices_per_process: int) -> list[tuple[subprocess.Popen, str]]:
  """Starts the script as `num_processes` processes of one run: (process, log stem)."""
  port = str(_free_port())
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_", "FERJAX_", "XLA_FLAGS"))}
  env.update(TFDS_DATA_DIR=tfds_data_dir, JAX_PLATFORMS="cpu",
             JAX_NUM_CPU_DEVICES=str(devices_per_process))
  run = f"{num_processes}x{devices_per_process}"
  processes = []
  for i in range(num_processes):
    # Output to files: a full pipe would stall a process that its peers wait for.
    stem = str(tmp_path / f"{run}_{i}")
    with open(stem + ".out", "w") as out, open(stem + ".err", "w") as err:
      processes.append((subprocess.Popen(
          [sys.executable, "-c", _SCRIPT, str(tmp_path / run), port, str(num_processes),
           str(i)], cwd=REPO, env=env, stdout=out, stderr=err), stem))
  return processes


def _result(process: subprocess.Popen, stem: str) -> dict:
  """The RESULT that `process` printed to STEM.out."""
  process.wait(timeout=600)
  with open(stem + ".out") as f:
    out = f.read()
  with open(stem + ".err") as f:
    err = f.read()
  assert process.returncode == 0, err[-3000:]
  lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
  assert lines, out[-2000:] + err[-2000:]
  return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_two_processes_train_like_one(tfds_data_dir, tmp_path):
  # Both runs at once: start-up (imports, compilation) dominates and overlaps.
  processes = _start(tmp_path, tfds_data_dir, 1, 4) + _start(tmp_path, tfds_data_dir, 2, 2)
  try:
    single, multi = [_result(*processes[0])], [_result(*p) for p in processes[1:]]
  finally:
    for p, _ in processes:
      if p.poll() is None:
        p.kill()
  assert [(r["joined"], r["processes"], r["devices"]) for r in single] == [(False, 1, 4)]
  assert [(r["joined"], r["processes"], r["devices"]) for r in multi] == [(True, 2, 4)] * 2
  reference = single[0]
  assert len(reference["losses"]) == 3 and np.all(np.isfinite(reference["losses"]))
  for result in multi:  # Every process sees the same global loss and parameters.
    np.testing.assert_allclose(result["losses"], reference["losses"], rtol=1e-5)
    for a, b in zip(result["params"], reference["params"], strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
