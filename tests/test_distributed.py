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


class TestResolveSettings:

  def test_defaults_leave_everything_to_detection(self):
    s = distributed.resolve_settings(environ={})
    assert s == distributed.Settings()
    assert not s.explicit and not s.single_process

  def test_environment_fills_unset_values(self):
    env = {"FERJAX_COORDINATOR": "10.0.0.1:1234", "FERJAX_NUM_PROCESSES": "4",
           "FERJAX_PROCESS_ID": "3"}
    s = distributed.resolve_settings(environ=env)
    assert (s.coordinator_address, s.num_processes, s.process_id) == ("10.0.0.1:1234", 4, 3)
    assert s.explicit

  def test_arguments_win_over_environment(self):
    env = {"FERJAX_COORDINATOR": "10.0.0.1:1234", "FERJAX_NUM_PROCESSES": "4",
           "FERJAX_PROCESS_ID": "3"}
    s = distributed.resolve_settings(coordinator_address="host-a:99", num_processes=8,
                                     process_id=0, environ=env)
    assert (s.coordinator_address, s.num_processes, s.process_id) == ("host-a:99", 8, 0)

  def test_empty_environment_values_count_as_unset(self):
    env = {"FERJAX_COORDINATOR": " ", "FERJAX_NUM_PROCESSES": "", "FERJAX_PROCESS_ID": ""}
    assert not distributed.resolve_settings(environ=env).explicit

  def test_one_process_or_off_is_single(self):
    assert distributed.resolve_settings(num_processes=1, environ={}).single_process
    assert distributed.resolve_settings(mode="off", environ={}).single_process

  @pytest.mark.parametrize("kwargs, env, message", [
      (dict(mode="on"), {}, "--distributed='on' is not one of auto, required, off"),
      (dict(coordinator_address="10.0.0.1"), {},
       "--coordinator_address='10.0.0.1' is not HOST:PORT"),
      (dict(coordinator_address="10.0.0.1:99999"), {}, "is not HOST:PORT"),
      (dict(coordinator_address=":8476"), {}, "is not HOST:PORT"),
      ({}, {"FERJAX_COORDINATOR": "nohostport"},
       "FERJAX_COORDINATOR='nohostport' is not HOST:PORT"),
      ({}, {"FERJAX_NUM_PROCESSES": "two"}, "FERJAX_NUM_PROCESSES='two' is not an integer"),
      (dict(num_processes=0), {}, "--num_processes=0 must be >= 1"),
      (dict(num_processes=2, process_id=2), {}, "--process_id=2 must lie in [0, 2)"),
      (dict(process_id=-1), {}, "--process_id=-1 must lie in >= 0"),
      (dict(heartbeat_timeout=0), {}, "--distributed_heartbeat_timeout=0 must be a positive"),
      (dict(mode="off", num_processes=2), {}, "--distributed=off contradicts"),
      (dict(mode="off"), {"FERJAX_COORDINATOR": "h:1"}, "--distributed=off contradicts"),
  ])
  def test_bad_settings_fail_with_one_line(self, kwargs, env, message):
    with pytest.raises(distributed.SetupError) as info:
      distributed.resolve_settings(environ=env, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


class TestFlags:

  def test_flag_defaults(self):
    s = distributed.settings_from_flags(_fresh_flags([]), environ={})
    assert s == distributed.Settings(mode="auto", initialization_timeout=300,
                                     heartbeat_timeout=100, shutdown_timeout=300)

  def test_flags_parse_into_settings(self):
    values = _fresh_flags(["--distributed=required", "--coordinator_address=10.1.2.3:8476",
                           "--num_processes=4", "--process_id=2",
                           "--distributed_initialization_timeout=30",
                           "--distributed_heartbeat_timeout=20",
                           "--distributed_shutdown_timeout=10"])
    s = distributed.settings_from_flags(values, environ={"FERJAX_PROCESS_ID": "1"})
    assert s == distributed.Settings("required", "10.1.2.3:8476", 4, 2, 30, 20, 10)

  def test_environment_completes_flags(self):
    values = _fresh_flags(["--num_processes=2"])
    s = distributed.settings_from_flags(
        values, environ={"FERJAX_COORDINATOR": "h:1", "FERJAX_PROCESS_ID": "1"})
    assert (s.coordinator_address, s.num_processes, s.process_id) == ("h:1", 2, 1)

  def test_unknown_mode_is_a_flag_error(self):
    with pytest.raises(flags.IllegalFlagValueError):
      _fresh_flags(["--distributed=yes"])


class TestStart:

  def test_single_process_never_touches_jax_distributed(self, monkeypatch):
    def fail(*args, **kwargs):
      raise AssertionError("jax.distributed.initialize must not be called")
    monkeypatch.setattr(jax.distributed, "initialize", fail)
    assert distributed.start(distributed.Settings(mode="off")) is False
    assert distributed.start(distributed.Settings(num_processes=1, process_id=0)) is False

  def test_settings_and_timeouts_reach_jax(self, monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize",
                        lambda *args, **kwargs: calls.append((args, kwargs)))
    settings = distributed.Settings("auto", "h:1", 2, 1, 30, 20, 10)
    assert distributed.start(settings) is True
    assert calls == [(("h:1", 2, 1), dict(initialization_timeout=30,
                                          heartbeat_timeout_seconds=20,
                                          shutdown_timeout_seconds=10))]


def test_no_cluster_runs_alone_and_required_fails():
  """In a clean process: auto -> single process; required -> one-line SetupError."""
  script = textwrap.dedent("""
      import jax
      from ferjax import distributed
      try:
        distributed.initialize(mode="required")
      except distributed.SetupError as e:
        print("required:", e)
      print("auto:", distributed.initialize(), jax.process_count())
  """)
  out = subprocess.run([sys.executable, "-c", script], env=_clean_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  assert "required: --distributed=required but no cluster" in out.stdout
  assert "auto: False 1" in out.stdout


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
