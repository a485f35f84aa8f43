"""One run per workdir: a lock file naming its holder (host, pid).

Two runs writing the same checkpoints would corrupt each other's saves, so a
run (training or eval-only) first takes `workdir/ferjax.lock`; a second run on
the same workdir is refused with one line naming the holder.

- Local (and NFS) workdirs: the file carries a POSIX record lock (`lockf`),
  which the kernel drops when the holder dies, however it dies. A file left
  by a crashed run is taken over with a warning naming that run.
- `gs://` workdirs (and filesystems without record locks) get a best-effort
  lock: the file's existence. A leftover file is taken over when it names a
  process on this host that is no longer running; one naming another host is
  refused, with the command to remove it (a crashed VM cannot release it).
  Two runs starting within the same second may both pass.
- Multi-process runs: process 0 holds the lock and tells the others whether
  it got it, so that all stop together.
"""

import dataclasses
import datetime
import errno
import fcntl
import json
import os
import socket

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from ferjax import errors

LOCK_NAME = "ferjax.lock"


class WorkdirBusy(errors.UserError):
  """Another run holds the workdir's lock."""


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a lock: host name, process id and start time (UTC, ISO 8601)."""
  host: str
  pid: int
  since: str

  @classmethod
  def this_process(cls) -> "Holder":
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return cls(socket.gethostname(), os.getpid(), now)

  @classmethod
  def parse(cls, text: str) -> "Holder | None":
    """The holder recorded in a lock file's text, None if it is empty or garbled."""
    try:
      fields = json.loads(text)
      return cls(str(fields["host"]), int(fields["pid"]), str(fields["since"]))
    except (ValueError, TypeError, KeyError):
      return None

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  def __str__(self) -> str:
    return f"pid {self.pid} on {self.host} (since {self.since})"

  def is_gone(self) -> bool:
    """True only when the holder is known to be dead: this host and no such process.

    Our own pid in the file is a previous incarnation (containers restart with
    the same pid).
    """
    if self.host != socket.gethostname():
      return False
    if self.pid == os.getpid():
      return True
    try:
      os.kill(self.pid, 0)
    except ProcessLookupError:
      return True
    except PermissionError:  # Alive, another user's.
      return False
    return False


class WorkdirLock:
  """A held lock; `release()` (or leaving the `with` block) removes the file."""

  def __init__(self, path: epath.Path | None, *, fd: int | None = None,
               holder: Holder | None = None):
    """`fd` holds a record lock; without one, `holder` is what the file must still name."""
    self.path, self._fd, self._holder = path, fd, holder

  def release(self) -> None:
    if self.path is None:
      return
    try:
      if self._fd is not None or Holder.parse(self.path.read_text()) == self._holder:
        self.path.unlink()
    except OSError:  # Already removed by hand: nothing to release.
      pass
    if self._fd is not None:
      os.close(self._fd)  # Drops the record lock, after the unlink.
    self.path = self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def _busy(path: epath.Path, holder: Holder | None, hint: str = "") -> WorkdirBusy:
  who = str(holder) if holder else "another run"
  return WorkdirBusy(f"workdir {path.parent} is in use by {who} (lock {path}); wait for it "
                     f"to finish or use another --workdir{hint}")


def _acquire_record_lock(path: epath.Path) -> WorkdirLock | None:
  """The kernel-backed lock, or None where the filesystem has no record locks."""
  me = Holder.this_process()
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EACCES, errno.EAGAIN):
        raise _busy(path, Holder.parse(path.read_text())) from None
      return None  # ENOLCK, EOPNOTSUPP, ...: no record locks here.
    try:
      if os.fstat(fd).st_ino != os.stat(path).st_ino:
        raise FileNotFoundError  # The holder released (removed) it while we opened it.
    except FileNotFoundError:
      os.close(fd)
      continue
    left = Holder.parse(os.read(fd, 4096).decode(errors="replace"))
    if left is not None:
      logging.warning("taking over %s: its holder, %s, ended without releasing it", path, left)
    os.ftruncate(fd, 0)
    os.pwrite(fd, me.to_json().encode(), 0)
    return WorkdirLock(path, fd=fd)


def _acquire_best_effort(path: epath.Path) -> WorkdirLock:
  me = Holder.this_process()
  if path.exists():
    left = Holder.parse(path.read_text())
    if left is not None and not left.is_gone():
      hint = "" if left.host == me.host else f" (if that run is gone: rm {path})"
      raise _busy(path, left, hint)
    logging.warning("taking over %s: its holder, %s, is no longer running", path,
                    left or "unknown")
  path.write_text(me.to_json())
  if Holder.parse(path.read_text()) != me:  # Another run wrote it at the same time.
    raise _busy(path, Holder.parse(path.read_text()))
  return WorkdirLock(path, holder=me)


def acquire(workdir: str) -> WorkdirLock:
  """Takes `workdir`'s lock (process 0) or raises WorkdirBusy (every process)."""
  path = epath.Path(workdir) / LOCK_NAME
  lock, refusal = WorkdirLock(None), None
  if jax.process_index() == 0:
    try:
      local = "://" not in os.fspath(path)
      lock = (local and _acquire_record_lock(path)) or _acquire_best_effort(path)
    except WorkdirBusy as e:
      refusal = e
  if jax.process_count() > 1:
    refused = bool(multihost_utils.broadcast_one_to_all(np.int32(refusal is not None)))
    if refused and refusal is None:
      refusal = WorkdirBusy(f"workdir {workdir} is in use by another run (see process 0)")
  if refusal is not None:
    raise refusal
  return lock
