"""Faults that must lose nothing: signals, SIGKILL, concurrent runs, full disks, damage."""

import errno
import glob
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import grain
import jax
import numpy as np
import pytest
from etils import epath

from conftest import REPO, TINY_IMAGE_OVERRIDES  # pylint: disable=g-bad-import-order
from ferjax import checkpointing, errors, stop_signals, workdir_lock

# 18 steps, a checkpoint every 3, one evaluation at the end, one Grain worker process.
SCENARIO = ["--config=configs/resnet.py:synthetic", *TINY_IMAGE_OVERRIDES,
            "--config.num_epochs=2", "--config.checkpoint_every_steps=3",
            "--config.eval_every_epochs=10", "--config.input.worker_count=1"]
TOTAL_STEPS = 18


class _Cli:
  """`python -m ferjax.main ARGS` in the background; a thread collects its stderr."""

  def __init__(self, args: list[str], data_dir: str):
    # JAX_PLATFORMS=cpu: no GPU-plugin probe, whose failure logs a traceback of its own.
    env = dict(os.environ, TFDS_DATA_DIR=data_dir, JAX_PLATFORMS="cpu")
    self.process = subprocess.Popen([sys.executable, "-m", "ferjax.main", *args], cwd=REPO,
                                    env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
    self.lines: list[str] = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self) -> None:
    for line in self.process.stderr:
      self.lines.append(line)

  def wait_for(self, text: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      found = [line for line in list(self.lines) if text in line]
      if found:
        return found[0]
      if self.process.poll() is not None and not self._reader.is_alive():
        break
      time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the run's output:\n{self.stderr[-3000:]}")

  def finish(self, timeout: float = 300) -> int:
    self.process.wait(timeout)
    # Surviving children of a killed run may hold the pipe open: no wait for its end.
    self._reader.join(5.0)
    return self.process.returncode

  @property
  def stderr(self) -> str:
    return "".join(self.lines)


def _error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("ferjax:")]


def _descendants(pid: int) -> list[int]:
  """Processes below `pid` (from /proc)."""
  parents = {}
  for stat in glob.glob("/proc/[0-9]*/stat"):
    try:
      with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
      parents[int(stat.split("/")[2])] = int(fields[1])
    except (OSError, IndexError, ValueError):
      continue
  found, frontier = [], [pid]
  while frontier:
    children = [p for p, parent in parents.items() if parent in frontier]
    found += children
    frontier = children
  return found


def _running(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


class OrphanProcesses(AssertionError):
  """Processes of a SIGKILLed run outlived it."""


def test_sigint_sigkill_and_a_concurrent_run_lose_nothing(tfds_data_dir, tmp_path):
  seed = random.randrange(2**16)
  rng = random.Random(seed)
  workdir = str(tmp_path / "run")
  args = [*SCENARIO, f"--workdir={workdir}"]
  context = f"(random seed {seed})"

  # Ctrl-C anywhere in the first run, from the first step's compilation on.
  run = _Cli(args, tfds_data_dir)
  run.wait_for("Training ")
  time.sleep(rng.uniform(0.0, 3.0))
  run.process.send_signal(signal.SIGINT)
  assert run.finish() == 130, run.stderr[-3000:]
  assert "Traceback" not in run.stderr, context
  (stop_line,) = _error_lines(run.stderr)
  assert stop_line.startswith("ferjax: stopped by SIGINT at step "), stop_line
  stopped_at = int(stop_line.split("at step ")[1].split(";")[0])
  assert checkpointing.saved_steps(os.path.join(workdir, "checkpoints"))[-1] == stopped_at

  # The rerun repeats no step; SIGKILL it at a random point after it resumed.
  run = _Cli(args, tfds_data_dir)
  assert f"Resumed from step {stopped_at}." in run.wait_for("Resumed from step"), context
  time.sleep(rng.uniform(0.0, 5.0))
  children, killed_pid = _descendants(run.process.pid), run.process.pid
  run.process.kill()
  run.finish()
  killed_with = checkpointing.saved_steps(os.path.join(workdir, "checkpoints"))[-1]
  deadline = time.monotonic() + 5.0  # The children get 5 s to notice and exit.
  while (orphans := [pid for pid in children if _running(pid)]) and time.monotonic() < deadline:
    time.sleep(0.2)
  for pid in orphans:  # Do not leave them to the rest of the test session.
    os.kill(pid, signal.SIGKILL)

  # The last run resumes from the newest complete checkpoint and finishes, while a
  # second run on the same workdir is refused in one line.
  run = _Cli(args, tfds_data_dir)
  assert f"Resumed from step {killed_with}." in run.wait_for("Resumed from step"), context
  taken_over = [line for line in run.lines if "taking over" in line]
  assert len(taken_over) == 1 and f"its holder, pid {killed_pid} on " in taken_over[0]
  env = dict(os.environ, TFDS_DATA_DIR=tfds_data_dir, JAX_PLATFORMS="cpu")
  second = subprocess.run([sys.executable, "-m", "ferjax.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert second.returncode == 2, second.stderr[-3000:]
  assert "Traceback" not in second.stderr
  (refusal,) = _error_lines(second.stderr)
  assert f"is in use by pid {run.process.pid} " in refusal and len(refusal) < 300, refusal
  assert run.finish() == 0, run.stderr[-3000:]
  assert checkpointing.saved_steps(os.path.join(workdir, "checkpoints"))[-1] == TOTAL_STEPS
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_NAME))
  assert not glob.glob(os.path.join(workdir, "checkpoints", "*tmp*"))
  if orphans:
    raise OrphanProcesses(f"{len(orphans)} of the {len(children)} processes of the SIGKILLed "
                          "run still run 5 s after it died")


def _iterator():
  return iter(grain.MapDataset.range(10).to_iter_dataset())


def _abstract(size: int) -> dict:
  return {"w": jax.ShapeDtypeStruct((size,), np.float32)}


def _random_state(size: int, seed: int) -> dict:
  # Random values: OCDBT compresses constant arrays to nearly nothing.
  return {"w": np.random.default_rng(seed).random((size,), np.float32)}


@pytest.fixture
def small_disk(tmp_path):
  """A 2 MiB tmpfs, or None where mounting is not permitted."""
  mount_point = tmp_path / "disk"
  mount_point.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                            str(mount_point)], capture_output=True).returncode == 0
  yield mount_point if mounted else None
  if mounted:
    subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_is_one_line_and_the_last_checkpoint_resumes(small_disk):
  if small_disk is None:
    pytest.skip("mounting a tmpfs is not permitted here "
                "(test_failing_writes_are_one_line_too simulates a full disk)")
  directory = str(small_disk / "checkpoints")
  saved = _random_state(50_000, 0)                       # 200 KB
  checkpointer = checkpointing.Checkpointer(directory, keep=3, best_metric="war")
  checkpointer.save(1, saved, _iterator())
  checkpointer.wait()

  # During a save: 4 MB passes the check against the last (200 KB) checkpoint.
  checkpointer.save(2, _random_state(1_000_000, 1), _iterator())
  with pytest.raises(checkpointing.OutOfSpace) as failure:
    checkpointer.wait()
  message = str(failure.value)
  assert "\n" not in message and len(message) < 300
  assert "saving step 2 failed; step 1 is intact" in message
  checkpointer.close()

  # Before a save: a rerun on a disk with less room than the last checkpoint stops at once.
  checkpointer = checkpointing.Checkpointer(directory, keep=3, best_metric="war")
  filler = small_disk / "filler"
  filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 100_000))
  with pytest.raises(checkpointing.OutOfSpace, match="MiB free, the last checkpoint took"):
    checkpointer.check_space()
  checkpointer.close()

  # Space freed: the rerun resumes from the last complete step and saves again.
  filler.unlink()
  checkpointer = checkpointing.Checkpointer(directory, keep=3, best_metric="war")
  step, restored = checkpointer.restore_latest(_abstract(50_000), _iterator())
  assert step == 1
  np.testing.assert_array_equal(restored["w"], saved["w"])
  checkpointer.save(2, restored, _iterator())
  checkpointer.close()
  assert sorted(os.listdir(directory)) == ["1", "2"]  # the failed save's leftovers are gone


def test_failing_writes_are_one_line_too(tmp_path, monkeypatch):
  """A writer failing with ENOSPC (the iterator's state file) stands in for a full disk."""
  directory = str(tmp_path / "checkpoints")
  checkpointer = checkpointing.Checkpointer(directory, keep=3, best_metric="war")
  checkpointer.save(1, _random_state(10, 0), _iterator())
  checkpointer.wait()
  write_text = epath.Path.write_text

  def full_disk(self, *args, **kwargs):
    if "process_0" in self.name:
      raise OSError(errno.ENOSPC, "No space left on device", str(self))
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(epath.Path, "write_text", full_disk)
  with pytest.raises(checkpointing.OutOfSpace, match="saving step 2 failed; step 1 is intact"):
    checkpointer.save(2, _random_state(10, 1), _iterator())
    checkpointer.wait()
  monkeypatch.undo()
  checkpointer.close()
  checkpointer = checkpointing.Checkpointer(directory, keep=3, best_metric="war")
  assert checkpointer.restore_latest(_abstract(10), _iterator())[0] == 1
  checkpointer.close()


def _three_steps(directory: str) -> None:
  checkpointer = checkpointing.Checkpointer(directory, keep=5, best_metric="war")
  for step in (1, 2, 3):
    checkpointer.save(step, _random_state(1000, step), _iterator())
    checkpointer.rank(step, {"war": 0.1 * step})
  checkpointer.close()


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("damage", ["truncated_data", "missing_manifest"])
def test_damaged_latest_step_falls_back_with_one_warning(tmp_path, caplog, damage):
  directory = str(tmp_path / "checkpoints")
  _three_steps(directory)
  state_dir = os.path.join(directory, "3", "state")
  if damage == "truncated_data":
    for path in glob.glob(os.path.join(state_dir, "d", "*")):
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  else:
    for path in glob.glob(os.path.join(state_dir, "**", "manifest.ocdbt"), recursive=True):
      os.remove(path)
  damaged_files = sorted(p[len(directory + "/3"):] for p in glob.glob(
      os.path.join(directory, "3", "**"), recursive=True))

  caplog.set_level(logging.WARNING)
  checkpointer = checkpointing.Checkpointer(directory, keep=1, best_metric="war")
  step, restored = checkpointer.restore_latest(_abstract(1000), _iterator())
  assert step == 2
  np.testing.assert_array_equal(restored["w"], _random_state(1000, 2)["w"])
  (warning,) = _warnings(caplog)
  assert warning.startswith("checkpoint step 3 cannot be read") and len(warning) < 300
  assert "moved to 3.damaged, resuming from step 2" in warning
  # Kept byte for byte, out of Orbax's sight: later saves and retention never touch it.
  assert sorted(p[len(directory + "/3.damaged"):] for p in glob.glob(
      os.path.join(directory, "3.damaged", "**"), recursive=True)) == damaged_files
  for step in (3, 4, 5):
    checkpointer.save(step, _random_state(1000, step), _iterator())
  checkpointer.close()
  assert checkpointing.saved_steps(directory) == [2, 5]  # the best (2) and the latest
  assert os.path.isdir(os.path.join(directory, "3.damaged"))


def test_every_step_unreadable_is_one_line_and_moves_nothing(tmp_path):
  directory = str(tmp_path / "checkpoints")
  _three_steps(directory)
  checkpointer = checkpointing.Checkpointer(directory, keep=5, best_metric="war")
  with pytest.raises(errors.UserError) as failure:
    checkpointer.restore_latest({"other": jax.ShapeDtypeStruct((3,), np.float32)}, _iterator())
  checkpointer.close()
  message = str(failure.value)   # A changed state layout, not damage: named, nothing moved.
  assert message.startswith(f"checkpoint {directory}/3 holds w; this run expects other")
  assert "\n" not in message and len(message) < 300
  assert checkpointing.saved_steps(directory) == [1, 2, 3]


def test_unreadable_ranking_file_is_set_aside(tmp_path, caplog):
  directory = str(tmp_path / "checkpoints")
  _three_steps(directory)
  with open(os.path.join(directory, "3", "metrics", "metrics"), "wb") as f:
    f.write(b"\x00{garbage")
  caplog.set_level(logging.WARNING)
  checkpointer = checkpointing.Checkpointer(directory, keep=5, best_metric="war")
  assert checkpointer.best_step() == 2          # step 3 (war 0.3) lost its ranking only
  assert checkpointer.restore_latest(_abstract(1000), _iterator())[0] == 3
  checkpointer.close()
  (warning,) = _warnings(caplog)
  assert warning.startswith("checkpoint step 3: its eval metrics file is unreadable")
  with open(os.path.join(directory, "3", "metrics", "metrics.unreadable"), "rb") as f:
    assert f.read() == b"\x00{garbage"


def test_a_changed_best_metric_still_ranks_old_steps(tmp_path):
  directory = str(tmp_path / "checkpoints")
  checkpointer = checkpointing.Checkpointer(directory, keep=3, best_metric="war")
  for step, war, uar in ((1, 0.9, 0.2), (2, 0.5, 0.6), (3, 0.1, 0.1)):
    checkpointer.save(step, _random_state(10, step), _iterator())
    checkpointer.rank(step, {"war": war, "uar": uar})
  assert checkpointer.best_step() == 1
  checkpointer.close()
  checkpointer = checkpointing.Checkpointer(directory, keep=3, best_metric="uar")
  assert checkpointer.best_step() == 2
  checkpointer.close()


def test_best_effort_lock_of_a_dead_process_on_this_host(tmp_path, caplog):
  """Where there are no record locks (gs://), the file's holder decides."""
  path = epath.Path(tmp_path) / workdir_lock.LOCK_NAME
  dead = subprocess.Popen(["true"])
  dead.wait()
  here = workdir_lock.Holder.this_process()
  path.write_text(workdir_lock.Holder(here.host, dead.pid, here.since).to_json())
  caplog.set_level(logging.WARNING)
  lock = workdir_lock._acquire_best_effort(path)  # pylint: disable=protected-access
  assert workdir_lock.Holder.parse(path.read_text()).pid == os.getpid()
  assert "is no longer running" in _warnings(caplog)[0]
  lock.release()
  assert not path.exists()
  alive = subprocess.Popen(["sleep", "60"])
  try:
    path.write_text(workdir_lock.Holder(here.host, alive.pid, here.since).to_json())
    with pytest.raises(workdir_lock.WorkdirBusy, match=f"in use by pid {alive.pid} on "):
      workdir_lock._acquire_best_effort(path)  # pylint: disable=protected-access
  finally:
    alive.kill()
    alive.wait()
  path.write_text(workdir_lock.Holder("elsewhere", 1, here.since).to_json())
  with pytest.raises(workdir_lock.WorkdirBusy, match=f"if that run is gone: rm {path}"):
    workdir_lock._acquire_best_effort(path)  # pylint: disable=protected-access


def test_second_signal_stops_at_once():
  with stop_signals.stop_at_step_boundary() as requests:
    os.kill(os.getpid(), signal.SIGINT)
    assert requests == [signal.SIGINT]        # recorded, the loop saves at the next step
    with pytest.raises(stop_signals.Interrupted) as stop:
      os.kill(os.getpid(), signal.SIGTERM)
  assert stop.value.exit_status == 143
  with pytest.raises(stop_signals.Interrupted) as stop:
    with stop_signals.stop_at_once():
      os.kill(os.getpid(), signal.SIGINT)
  assert stop.value.exit_status == 130
