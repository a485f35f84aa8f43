"""Joining JAX's multi-process runtime (TPU pod slices, multi-node GPU, local tests).

A multi-host ferjax run is one process per TPU VM worker, or one per GPU under
SLURM, all running the same command. Before any other JAX call, `main` calls
`initialize_from_flags`, which passes the coordinator settings given
(`--coordinator_address`, `--num_processes`, `--process_id`, or the environment
variables `FERJAX_COORDINATOR`, `FERJAX_NUM_PROCESSES`, `FERJAX_PROCESS_ID`;
flags win) to `jax.distributed.initialize`, whose cluster detection (Cloud TPU
VMs, SLURM under `srun`, Open MPI) fills in the rest. No runtime is started for
`--distributed=off`, `--num_processes=1`, or in `auto` mode when nothing is
given and no cluster is detected; `--distributed=required` makes the latter an
error, so that a pod launch whose detection failed does not silently start N
independent runs.

Failure handling is JAX's coordination service: every process sends heartbeats
to the coordinator (process 0). When a process dies, the others abort within
about `heartbeat_timeout` seconds with "Terminating process because the JAX
distributed service detected fatal errors ... another task died", even if they
are blocked inside a collective; when process 0 dies, the others notice their
failed heartbeats at once. A process that exits while its peers keep running
waits at most `shutdown_timeout` seconds at the shutdown barrier, then all abort.
A peer that never arrives fails start-up after `initialization_timeout` seconds.
"""

import os

from absl import flags, logging

from ferjax import errors

MODES = ("auto", "required", "off")
ENV_COORDINATOR = "FERJAX_COORDINATOR"
ENV_NUM_PROCESSES = "FERJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "FERJAX_PROCESS_ID"
_GIVE_ALL = "give --coordinator_address, --num_processes and --process_id"


class SetupError(errors.UserError, ValueError):
  """Inconsistent or malformed distributed settings (flags or environment)."""


def _env_int(value: int | None, name: str) -> int | None:
  """`value`, or else the integer in environment variable `name` (None if unset or blank)."""
  text = os.environ.get(name, "").strip()
  if value is not None or not text:
    return value
  try:
    return int(text)
  except ValueError:
    raise SetupError(f"environment variable {name}={text!r} is not an integer") from None


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None,
               *,
               mode: str = "auto",
               initialization_timeout: int = 300,
               heartbeat_timeout: int = 100,
               shutdown_timeout: int = 300) -> bool:
  """Starts `jax.distributed` as the module docstring says; must precede any other JAX call.

  Args:
    coordinator_address: `HOST:PORT` of process 0's coordination service.
    num_processes: total number of processes.
    process_id: this process's index in `[0, num_processes)`.
    mode: `auto`, `required` or `off` (`--distributed`).
    initialization_timeout, heartbeat_timeout, shutdown_timeout: seconds, as
      the flags of `define_flags` say.

  Returns:
    True if this process joined a multi-process runtime (or had already joined
    one), False if it runs alone.

  Raises:
    SetupError: an unknown mode, a malformed address or integer, coordinator
      settings with `mode='off'`, settings that JAX rejects or its cluster
      detection could not complete, or `required` with nothing detected.
  """
  if mode not in MODES:
    raise SetupError(f"--distributed={mode!r} is not one of {', '.join(MODES)}")
  source = "--coordinator_address" if coordinator_address else ENV_COORDINATOR
  address = coordinator_address or os.environ.get(ENV_COORDINATOR, "").strip() or None
  num_processes = _env_int(num_processes, ENV_NUM_PROCESSES)
  process_id = _env_int(process_id, ENV_PROCESS_ID)
  explicit = (address, num_processes, process_id) != (None, None, None)
  if mode == "off" and explicit:
    raise SetupError("--distributed=off contradicts the coordinator settings given "
                     "(--coordinator_address/--num_processes/--process_id or FERJAX_*)")
  # JAX splits off the port unchecked: a missing one would be an IndexError.
  host, _, port = (address or "").rpartition(":")
  if address and not (host and port.isdigit() and 0 < int(port) < 65536):
    raise SetupError(f"{source}={address!r} is not HOST:PORT (the address of process 0 "
                     "and a free port, e.g. 10.0.0.1:8476)")
  # Imported here: the entry points define this module's flags at import time,
  # and their --help must not wait for JAX to load.
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    return True
  if mode == "off" or num_processes == 1:
    return False
  logging.info("Joining the JAX distributed runtime: coordinator_address=%s, num_processes=%s, "
               "process_id=%s (None: from cluster detection); start-up timeout %d s.",
               address, num_processes, process_id, initialization_timeout)
  try:
    jax.distributed.initialize(address, num_processes, process_id,
                               initialization_timeout=initialization_timeout,
                               heartbeat_timeout_seconds=heartbeat_timeout,
                               shutdown_timeout_seconds=shutdown_timeout)
  except ValueError as e:
    # JAX checks the settings, after cluster detection, before it starts
    # anything: a ValueError means they are incomplete or out of range.
    if explicit:
      raise SetupError(f"distributed settings rejected by JAX ({e}); outside a detected "
                       f"cluster {_GIVE_ALL}") from None
    if mode == "required":
      raise SetupError("--distributed=required but no cluster (Cloud TPU VM, SLURM srun, "
                       f"Open MPI) was detected ({e}); {_GIVE_ALL}") from None
    logging.info("No cluster detected: running as a single process.")
    return False
  logging.info("JAX distributed runtime up: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the start-up flags (call once, at import time of the entry point)."""
  flags.DEFINE_enum(
      "distributed", "auto", MODES,
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
  for name, default, help_text in (
      ("initialization_timeout", 300, "Seconds to wait for all processes to connect."),
      ("heartbeat_timeout", 100, "Seconds without heartbeats after which a process counts "
       "as dead and all others abort."),
      ("shutdown_timeout", 300, "Seconds an exiting process waits at the shutdown barrier "
       "for the others.")):
    flags.DEFINE_integer(f"distributed_{name}", default, help_text, lower_bound=1,
                         flag_values=flag_values)


def initialize_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> bool:
  """`initialize` with the (parsed) flags of `define_flags`; first thing in `main`."""
  return initialize(flag_values.coordinator_address, flag_values.num_processes,
                    flag_values.process_id, mode=flag_values.distributed,
                    initialization_timeout=flag_values.distributed_initialization_timeout,
                    heartbeat_timeout=flag_values.distributed_heartbeat_timeout,
                    shutdown_timeout=flag_values.distributed_shutdown_timeout)
