"""Joining JAX's multi-process runtime (TPU pod slices, multi-node GPU, local tests).

A multi-host ferjax run is one process per TPU VM worker, or one per GPU under
SLURM, all running the same `python -m ferjax.main` command. Before any other
JAX call, each process calls `initialize` (from `main` via
`initialize_from_flags`), which starts `jax.distributed`:

* explicitly, when a coordinator is given (`--coordinator_address`,
  `--num_processes`, `--process_id`, or the environment variables
  `FERJAX_COORDINATOR`, `FERJAX_NUM_PROCESSES`, `FERJAX_PROCESS_ID`; flags win);
* by JAX's own cluster detection otherwise (Cloud TPU VMs, SLURM under `srun`,
  Open MPI), with no arguments;
* not at all for a single process (nothing detected, `--num_processes=1`, or
  `--distributed=off`).

`--distributed=required` turns "nothing detected" into an error, so that a pod
launch whose detection failed does not silently start N independent runs.

Failure handling is JAX's coordination service: every process sends heartbeats
to the coordinator (process 0). When a process dies, the others abort within
about `heartbeat_timeout` seconds with "Terminating process because the JAX
distributed service detected fatal errors ... another task died", even if they
are blocked inside a collective; when process 0 dies, the others notice their
failed heartbeats at once. A process that exits while its peers keep running
waits at most `shutdown_timeout` seconds at the shutdown barrier, then all abort.
A peer that never arrives fails start-up after `initialization_timeout` seconds.
"""

from collections.abc import Mapping
import dataclasses
import os

from absl import flags, logging

from ferjax import errors

MODES = ("auto", "required", "off")
ENV_COORDINATOR = "FERJAX_COORDINATOR"
ENV_NUM_PROCESSES = "FERJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "FERJAX_PROCESS_ID"


class SetupError(errors.UserError, ValueError):
  """Inconsistent or malformed distributed settings (flags or environment)."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """Resolved start-up settings; `None` fields are left to cluster detection."""
  mode: str = "auto"
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout: int = 300
  heartbeat_timeout: int = 100
  shutdown_timeout: int = 300

  @property
  def single_process(self) -> bool:
    """True when no runtime is started: `off`, or explicitly one process."""
    return self.mode == "off" or self.num_processes == 1

  @property
  def explicit(self) -> bool:
    """True when any of coordinator / process count / process id was given."""
    return (self.coordinator_address, self.num_processes, self.process_id) != (None,) * 3


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
  text = environ.get(name, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise SetupError(f"environment variable {name}={text!r} is not an integer") from None


def _check_address(address: str, source: str) -> None:
  host, sep, port = address.rpartition(":")
  if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
    raise SetupError(f"{source}={address!r} is not HOST:PORT (the address of process 0 "
                     "and a free port, e.g. 10.0.0.1:8476)")


def resolve_settings(mode: str = "auto",
                     coordinator_address: str | None = None,
                     num_processes: int | None = None,
                     process_id: int | None = None,
                     initialization_timeout: int = 300,
                     heartbeat_timeout: int = 100,
                     shutdown_timeout: int = 300,
                     environ: Mapping[str, str] | None = None) -> Settings:
  """Merges explicit values with the `FERJAX_*` environment and validates them.

  An argument that is not `None` (or `""` for the address) wins over its
  environment variable.

  Args:
    mode: `auto` (start the runtime if a coordinator is given or a cluster is
      detected), `required` (as auto, but a single undetected process is an
      error) or `off` (never start it).
    coordinator_address: `HOST:PORT` of process 0's coordination service.
    num_processes: total number of processes.
    process_id: this process's index in `[0, num_processes)`.
    initialization_timeout: seconds to wait for all processes to connect.
    heartbeat_timeout: seconds without heartbeats after which a process is dead.
    shutdown_timeout: seconds an exiting process waits for the others.
    environ: the environment to read (default `os.environ`).

  Returns:
    The validated `Settings`.

  Raises:
    SetupError: an unknown mode, a malformed address or integer, a process id
      outside `[0, num_processes)`, a non-positive timeout, or coordinator
      settings together with `mode='off'`.
  """
  environ = os.environ if environ is None else environ
  if mode not in MODES:
    raise SetupError(f"--distributed={mode!r} is not one of {', '.join(MODES)}")
  source = "--coordinator_address"
  if not coordinator_address:
    coordinator_address = environ.get(ENV_COORDINATOR, "").strip() or None
    source = ENV_COORDINATOR
  if coordinator_address is not None:
    _check_address(coordinator_address, source)
  if num_processes is None:
    num_processes = _env_int(environ, ENV_NUM_PROCESSES)
  if process_id is None:
    process_id = _env_int(environ, ENV_PROCESS_ID)
  if num_processes is not None and num_processes < 1:
    raise SetupError(f"--num_processes={num_processes} must be >= 1")
  if process_id is not None and (process_id < 0 or (
      num_processes is not None and process_id >= num_processes)):
    bound = f"[0, {num_processes})" if num_processes is not None else ">= 0"
    raise SetupError(f"--process_id={process_id} must lie in {bound}")
  for name, value in (("initialization_timeout", initialization_timeout),
                      ("heartbeat_timeout", heartbeat_timeout),
                      ("shutdown_timeout", shutdown_timeout)):
    if value < 1:
      raise SetupError(f"--distributed_{name}={value} must be a positive number of seconds")
  settings = Settings(mode, coordinator_address, num_processes, process_id,
                      initialization_timeout, heartbeat_timeout, shutdown_timeout)
  if mode == "off" and settings.explicit:
    raise SetupError("--distributed=off contradicts the coordinator settings given "
                     f"(--coordinator_address/--num_processes/--process_id or {ENV_COORDINATOR}/"
                     f"{ENV_NUM_PROCESSES}/{ENV_PROCESS_ID})")
  return settings


def start(settings: Settings) -> bool:
  """Starts `jax.distributed` as `settings` say; must precede any other JAX call.

  Returns:
    True if this process joined a multi-process runtime (or had already joined
    one), False if it runs alone.

  Raises:
    SetupError: `required` mode with no coordinator and no detected cluster, or
      partial coordinator settings that cluster detection could not complete.
  """
  # Imported here: the entry points define this module's flags at import time,
  # and their --help must not wait for JAX to load.
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    return True
  if settings.single_process:
    return False
  timeouts = dict(initialization_timeout=settings.initialization_timeout,
                  heartbeat_timeout_seconds=settings.heartbeat_timeout,
                  shutdown_timeout_seconds=settings.shutdown_timeout)
  if settings.explicit:
    logging.info("Joining JAX distributed runtime at %s as process %s of %s "
                 "(start-up timeout %d s).", settings.coordinator_address or "<detected>",
                 "<detected>" if settings.process_id is None else settings.process_id,
                 "<detected>" if settings.num_processes is None else settings.num_processes,
                 settings.initialization_timeout)
  else:
    logging.info("Detecting a cluster (Cloud TPU, SLURM, Open MPI) for the JAX "
                 "distributed runtime (start-up timeout %d s).",
                 settings.initialization_timeout)
  try:
    jax.distributed.initialize(settings.coordinator_address, settings.num_processes,
                               settings.process_id, **timeouts)
  except ValueError as e:
    # JAX raises ValueError before doing anything when detection leaves a value
    # unset; anything else (a real start-up failure) propagates unchanged.
    if jax.distributed.is_initialized() or "defined" not in str(e):
      raise
    if settings.explicit:
      raise SetupError(
          f"incomplete distributed settings ({e}): outside a detected cluster give all of "
          "--coordinator_address, --num_processes and --process_id") from None
    if settings.mode == "required":
      raise SetupError(
          "--distributed=required but no cluster (Cloud TPU VM, SLURM srun, Open MPI) was "
          "detected; give --coordinator_address, --num_processes and --process_id") from None
    logging.info("No cluster detected: running as a single process.")
    return False
  logging.info("JAX distributed runtime up: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               *,
               mode: str = "auto",
               initialization_timeout: int = 300,
               heartbeat_timeout: int = 100,
               shutdown_timeout: int = 300) -> bool:
  """`resolve_settings` (with `os.environ`) then `start`; see the module docstring.

  Returns:
    True if this process is part of a multi-process runtime, False if alone.
  """
  return start(resolve_settings(mode, coordinator_address, num_processes, process_id,
                                initialization_timeout, heartbeat_timeout,
                                shutdown_timeout))


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the start-up flags (call once, at import time of the entry point).

  `--distributed`, `--coordinator_address`, `--num_processes`, `--process_id`,
  `--distributed_initialization_timeout`, `--distributed_heartbeat_timeout`,
  `--distributed_shutdown_timeout`.
  """
  defaults = Settings()
  flags.DEFINE_enum(
      "distributed", defaults.mode, MODES,
      "Multi-process start-up: auto = start JAX's distributed runtime if a coordinator "
      "is given or a cluster (Cloud TPU VM, SLURM srun, Open MPI) is detected; "
      "required = the same, but fail if neither; off = single process.",
      flag_values=flag_values)
  flags.DEFINE_string(
      "coordinator_address", None,
      f"HOST:PORT of process 0's coordination service (env {ENV_COORDINATOR}); "
      "not needed on Cloud TPU or under SLURM.", flag_values=flag_values)
  flags.DEFINE_integer(
      "num_processes", None, f"Total number of processes (env {ENV_NUM_PROCESSES}).",
      flag_values=flag_values)
  flags.DEFINE_integer(
      "process_id", None, f"Index of this process, 0..num_processes-1 (env {ENV_PROCESS_ID}).",
      flag_values=flag_values)
  flags.DEFINE_integer(
      "distributed_initialization_timeout", defaults.initialization_timeout,
      "Seconds to wait for all processes to connect before failing.",
      flag_values=flag_values)
  flags.DEFINE_integer(
      "distributed_heartbeat_timeout", defaults.heartbeat_timeout,
      "Seconds without heartbeats after which a process counts as dead and all others "
      "abort.", flag_values=flag_values)
  flags.DEFINE_integer(
      "distributed_shutdown_timeout", defaults.shutdown_timeout,
      "Seconds an exiting process waits at the shutdown barrier for the others.",
      flag_values=flag_values)


def settings_from_flags(flag_values: flags.FlagValues = flags.FLAGS,
                        environ: Mapping[str, str] | None = None) -> Settings:
  """`resolve_settings` from the (parsed) flags of `define_flags`."""
  return resolve_settings(flag_values.distributed, flag_values.coordinator_address,
                          flag_values.num_processes, flag_values.process_id,
                          flag_values.distributed_initialization_timeout,
                          flag_values.distributed_heartbeat_timeout,
                          flag_values.distributed_shutdown_timeout, environ)


def initialize_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> bool:
  """Starts the runtime from the flags of `define_flags`; first thing in `main`.

  Returns:
    True if this process is part of a multi-process runtime, False if alone.
  """
  return start(settings_from_flags(flag_values))
