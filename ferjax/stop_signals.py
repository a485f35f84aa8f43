"""SIGINT (Ctrl-C) and SIGTERM (preemption) end a run with one line and a known status.

Outside the train loop (`stop_at_once`) either signal stops the run where it
is: nothing trained since the last checkpoint is lost there. Inside it
(`stop_at_step_boundary`) the loop finishes the current step, saves a
checkpoint and then raises `Interrupted`; a second signal stops it at once.
The entry points exit with 128 + the signal number (130 for SIGINT, 143 for
SIGTERM), as a shell reports a process killed by that signal.

Multi-process runs leave SIGTERM to JAX, whose preemption sync makes every
host stop at the same step (`CheckpointManager.reached_preemption`), and stop
on SIGINT at once, without a checkpoint: a flag local to each host could stop
hosts at different steps, and their saves would never meet.
"""

from collections.abc import Callable, Iterator
import contextlib
import signal

import jax

from ferjax import errors


class Interrupted(errors.Preempted):
  """Raised on SIGINT/SIGTERM; `exit_status` is what the process should exit with."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum

  @property
  def exit_status(self) -> int:
    return 128 + self.signum


def name(signum: int) -> str:
  return signal.Signals(signum).name


def _handled() -> tuple[int, ...]:
  return (signal.SIGINT, signal.SIGTERM) if jax.process_count() == 1 else (signal.SIGINT,)


@contextlib.contextmanager
def _handlers(handler: Callable, signums: tuple[int, ...]) -> Iterator[None]:
  previous = {signum: signal.signal(signum, handler) for signum in signums}
  try:
    yield
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)


def _raise(signum: int, frame) -> None:
  del frame
  raise Interrupted(signum, f"stopped by {name(signum)} (nothing trained since the last "
                    "checkpoint is lost); rerun the same command to resume")


@contextlib.contextmanager
def stop_at_once() -> Iterator[None]:
  """SIGINT/SIGTERM raise `Interrupted` wherever the main thread is."""
  with _handlers(_raise, _handled()):
    yield


@contextlib.contextmanager
def stop_at_step_boundary() -> Iterator[list[int]]:
  """Records SIGINT/SIGTERM in the yielded list instead of raising (single process).

  The train loop polls the list after each step. A second signal while one is
  pending raises `Interrupted` at once: the user does not want to wait.
  """
  requests: list[int] = []

  def record(signum: int, frame) -> None:
    del frame
    if requests:
      raise Interrupted(signum, f"stopped by a second {name(signum)} before the checkpoint "
                        "was written; rerun the same command to resume from the last one")
    requests.append(signum)

  single_process = jax.process_count() == 1
  with _handlers(record, (signal.SIGINT, signal.SIGTERM) if single_process else ()):
    yield requests
