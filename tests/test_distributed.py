"""Tests of ferjax.distributed: settings resolution and real 2-process runs on CPU."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

from absl import flags
import jax
import pytest

from ferjax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each process holds 2 CPU devices and the rows [1, 2] * 10**process_id of a
# 4-row global array; the jitted global sum must be 1 + 2 + 10 + 20 = 33.
_WORKER = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from ferjax import distributed
    port, pid = sys.argv[1], int(sys.argv[2])
    joined = distributed.initialize(f"127.0.0.1:{port}", 2, pid, initialization_timeout=60,
                                    heartbeat_timeout=5, shutdown_timeout=5)
    mesh = jax.make_mesh((jax.device_count(),), ("d",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    local = np.array([1.0, 2.0], np.float32) * 10 ** pid
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("d")), local)
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))
    print(f"RESULT joined={joined} processes={jax.process_count()} devices={jax.device_count()} "
          f"sum={float(total(x))}", flush=True)
    while True:  # Collectives until a peer dies.
      total(x).block_until_ready()
""")


def _clean_env(**extra) -> dict:
  """The test environment without cluster hints, JAX on 2 CPU devices."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_", "FERJAX_", "JAX_", "TPU_", "XLA_FLAGS"))}
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2", PYTHONUNBUFFERED="1",
             PYTHONPATH=REPO, **extra)
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _result_line(proc: subprocess.Popen) -> str:
  """The worker's RESULT line (Gloo also prints to stdout), or "" if it exited."""
  for line in proc.stdout:
    if line.startswith("RESULT "):
      return line.strip()
  return ""


def _fresh_flags(argv: list[str]) -> flags.FlagValues:
  values = flags.FlagValues()
  distributed.define_flags(values)
  values(["prog", *argv])
  return values


def _jax_call(address=None, num_processes=None, process_id=None, init=300, heartbeat=100,
              shutdown=300) -> tuple:
  """The arguments `jax.distributed.initialize` is expected to receive."""
  return ((address, num_processes, process_id),
          dict(initialization_timeout=init, heartbeat_timeout_seconds=heartbeat,
               shutdown_timeout_seconds=shutdown))


@pytest.fixture
def jax_calls(monkeypatch) -> list:
  """Records `jax.distributed.initialize` calls instead of starting anything; no FERJAX_* set."""
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda *args, **kwargs: calls.append((args, kwargs)))
  return calls


class TestSettings:

  def test_defaults_leave_everything_to_detection(self, jax_calls):
    assert distributed.initialize() is True
    assert jax_calls == [_jax_call()]

  def test_environment_fills_unset_values(self, jax_calls, monkeypatch):
    monkeypatch.setenv("FERJAX_COORDINATOR", "10.0.0.1:1234")
    monkeypatch.setenv("FERJAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("FERJAX_PROCESS_ID", "3")
    distributed.initialize(heartbeat_timeout=7)
    assert jax_calls == [_jax_call("10.0.0.1:1234", 4, 3, heartbeat=7)]

  def test_arguments_win_over_environment(self, jax_calls, monkeypatch):
    monkeypatch.setenv("FERJAX_COORDINATOR", "10.0.0.1:1234")
    monkeypatch.setenv("FERJAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("FERJAX_PROCESS_ID", "3")
    distributed.initialize("host-a:99", 8, 0)
    assert jax_calls == [_jax_call("host-a:99", 8, 0)]

  def test_empty_environment_values_count_as_unset(self, jax_calls, monkeypatch):
    monkeypatch.setenv("FERJAX_COORDINATOR", " ")
    monkeypatch.setenv("FERJAX_NUM_PROCESSES", "")
    monkeypatch.setenv("FERJAX_PROCESS_ID", "")
    distributed.initialize(mode="off")  # Would contradict `off` if any counted as set.
    distributed.initialize()
    assert jax_calls == [_jax_call()]

  def test_one_process_or_off_never_touches_jax_distributed(self, jax_calls):
    assert distributed.initialize(num_processes=1) is False
    assert distributed.initialize(num_processes=1, process_id=0) is False
    assert distributed.initialize(mode="off") is False
    assert not jax_calls

  @pytest.mark.parametrize("kwargs, env, message", [
      (dict(mode="on"), {}, "--distributed='on' is not one of auto, required, off"),
      (dict(coordinator_address="10.0.0.1"), {},
       "--coordinator_address='10.0.0.1' is not HOST:PORT"),
      (dict(coordinator_address="10.0.0.1:99999"), {}, "is not HOST:PORT"),
      (dict(coordinator_address=":8476"), {}, "is not HOST:PORT"),
      ({}, {"FERJAX_COORDINATOR": "nohostport"},
       "FERJAX_COORDINATOR='nohostport' is not HOST:PORT"),
      ({}, {"FERJAX_NUM_PROCESSES": "two"}, "FERJAX_NUM_PROCESSES='two' is not an integer"),
      (dict(mode="off", num_processes=2), {}, "--distributed=off contradicts"),
      (dict(mode="off"), {"FERJAX_COORDINATOR": "h:1"}, "--distributed=off contradicts"),
  ])
  def test_bad_settings_fail_with_one_line(self, jax_calls, monkeypatch, kwargs, env, message):
    for name, value in env.items():
      monkeypatch.setenv(name, value)
    with pytest.raises(distributed.SetupError) as info:
      distributed.initialize(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not jax_calls


class TestFlags:

  def test_flag_defaults(self, jax_calls):
    distributed.initialize_from_flags(_fresh_flags([]))
    assert jax_calls == [_jax_call(init=300, heartbeat=100, shutdown=300)]

  def test_flags_reach_jax(self, jax_calls, monkeypatch):
    monkeypatch.setenv("FERJAX_PROCESS_ID", "1")
    values = _fresh_flags(["--distributed=required", "--coordinator_address=10.1.2.3:8476",
                           "--num_processes=4", "--process_id=2",
                           "--distributed_initialization_timeout=30",
                           "--distributed_heartbeat_timeout=20",
                           "--distributed_shutdown_timeout=10"])
    assert distributed.initialize_from_flags(values) is True
    assert jax_calls == [_jax_call("10.1.2.3:8476", 4, 2, init=30, heartbeat=20, shutdown=10)]

  def test_environment_completes_flags(self, jax_calls, monkeypatch):
    monkeypatch.setenv("FERJAX_COORDINATOR", "h:1")
    monkeypatch.setenv("FERJAX_PROCESS_ID", "1")
    distributed.initialize_from_flags(_fresh_flags(["--num_processes=2"]))
    assert jax_calls == [_jax_call("h:1", 2, 1)]

  @pytest.mark.parametrize("argv", [["--distributed=yes"],
                                    ["--distributed_heartbeat_timeout=0"],
                                    ["--distributed_initialization_timeout=-5"]])
  def test_bad_flag_values_are_flag_errors(self, argv):
    with pytest.raises(flags.IllegalFlagValueError):
      _fresh_flags(argv)


def test_settings_that_jax_rejects_fail_with_one_line():
  """In a clean process, where JAX really checks: one-line SetupErrors, then auto runs alone."""
  script = textwrap.dedent("""
      import jax
      from ferjax import distributed
      for kwargs in (dict(mode="required"), dict(num_processes=2),
                     dict(coordinator_address="h:1", num_processes=2, process_id=2)):
        try:
          distributed.initialize(**kwargs)
        except distributed.SetupError as e:
          print(f"{kwargs}: {e}")
      print("auto:", distributed.initialize(), jax.process_count())
  """)
  out = subprocess.run([sys.executable, "-c", script], env=_clean_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0].startswith("{'mode': 'required'}: --distributed=required but no cluster"), lines
  assert lines[1].startswith("{'num_processes': 2}: distributed settings rejected by JAX ("), lines
  assert "outside a detected cluster give --coordinator_address" in lines[1]
  assert lines[2].startswith("{'coordinator_address': 'h:1', 'num_processes': 2, "
                             "'process_id': 2}: distributed settings rejected by JAX ("), lines
  assert "process_id < num_processes" in lines[2]
  assert lines[3:] == ["auto: False 1"], lines


@pytest.mark.parametrize("victim", [1, 0], ids=["kill_worker", "kill_coordinator"])
def test_two_processes_sum_then_survivor_aborts_when_peer_is_killed(victim):
  """2 processes x 2 CPU devices: right global sum; SIGKILL one, the other exits fast."""
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(port), str(i)],
                            env=_clean_env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    for p in procs:
      result = _result_line(p)
      assert result == "RESULT joined=True processes=2 devices=4 sum=33.0", (
          result + p.stderr.read())
    time.sleep(0.5)  # Both inside the collective loop.
    survivor = procs[1 - victim]
    start = time.monotonic()
    procs[victim].send_signal(signal.SIGKILL)
    survivor.wait(timeout=45)
    elapsed = time.monotonic() - start
    err = survivor.stderr.read()
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  print(f"survivor of killed process {victim} exited after {elapsed:.1f} s")
  assert survivor.returncode != 0
  assert "another task died" in err, err[-2000:]
  assert elapsed < 20  # heartbeat_timeout=5 in the worker.
