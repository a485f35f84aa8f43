"""What a run prints: library chatter filtered, progress with a train-time ETA, a summary.

- `quiet_libraries(quiet)`: drops the INFO lines of libraries (Orbax writes
  ~30 per checkpoint, TFDS, clu, Grain) while ferjax's own INFO lines and
  every warning stay (`ferjax.main --library_logs` shows them all).
- `Progress`: train throughput and ETA from train-step time only: the first
  step after a start or resume (compilation) and whatever runs inside
  `paused()` (evaluation, checkpointing) are not counted. A tqdm bar per epoch
  when stderr is a terminal, else one log line per report at most every
  `min_interval_s` seconds.
- `summary_lines`: the run's last lines: WAR/UAR, best checkpoint, output paths.
"""

import contextlib
import logging as std_logging
import os
import sys
import time
from collections.abc import Callable

import jax
import tqdm
from absl import logging
from etils import epath

_FERJAX_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _LibraryInfoFilter(std_logging.Filter):
  """Passes warnings and errors from anywhere, INFO only from ferjax's own modules."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(_FERJAX_DIR)


_FILTER = _LibraryInfoFilter()


def quiet_libraries(quiet: bool) -> None:
  """With `quiet`, absl's handler drops INFO (and debug) lines from outside ferjax."""
  handler = logging.get_absl_handler()
  if quiet:
    handler.addFilter(_FILTER)
  else:
    handler.removeFilter(_FILTER)


def format_duration(seconds: float) -> str:
  """Whole seconds as `1h02m03s`, `2m03s` or `3s`."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{seconds:02d}s"
  return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
  """Counts train-step time and shows progress (module docstring).

  Call `step(step, metrics)` after each dispatched train step, `report(step,
  loss)` where the loop has the step's scalars on the host, and wrap evaluation
  and checkpointing in `paused()`. JAX dispatches steps asynchronously: the
  clock is read after waiting for the last step's outputs, so queued device
  work is counted as train time, not as evaluation.
  """

  def __init__(self, *, total_steps: int, steps_per_epoch: int, start_step: int,
               interactive: bool | None = None, min_interval_s: float = 10.0,
               clock: Callable[[], float] = time.monotonic, stream=None):
    self.total_steps = total_steps
    self.steps_per_epoch = steps_per_epoch
    self.min_interval_s = min_interval_s
    self._clock = clock
    self._stream = stream or sys.stderr
    if interactive is None:
      interactive = self._stream.isatty()
    self._bar = None
    if interactive and jax.process_index() == 0:
      self._bar = tqdm.tqdm(total=steps_per_epoch, file=self._stream, dynamic_ncols=True,
                            leave=False, bar_format="{desc} {percentage:3.0f}%|{bar}| "
                                                    "{n_fmt}/{total_fmt}{postfix}")
    self._last_outputs = None
    self._started = None          # clock at the end of the step that compiled
    self._counted_steps = 0       # steps since then, outside paused()
    self._counted_seconds = 0.0   # their time, up to `_started`
    self._last_line = None

  def step(self, step: int, outputs) -> None:
    """Records that train step `step` (1-based) was dispatched with `outputs`."""
    self._last_outputs = outputs
    if self._started is None:
      jax.block_until_ready(outputs)  # The first step includes compilation: not counted.
      self._started = self._clock()
    else:
      self._counted_steps += 1
    if self._bar is not None:
      epoch = (step - 1) // self.steps_per_epoch
      self._bar.set_description_str(f"epoch {epoch + 1}/{self.num_epochs}", refresh=False)
      self._bar.n = step - epoch * self.steps_per_epoch
      self._bar.refresh()

  @property
  def num_epochs(self) -> int:
    return -(-self.total_steps // self.steps_per_epoch)

  def _train_seconds(self) -> float:
    if self._started is None:
      return 0.0
    return self._counted_seconds + self._clock() - self._started

  def steps_per_second(self) -> float | None:
    """Counted steps over counted time; None until a step after the compiled one."""
    seconds = self._train_seconds()
    return self._counted_steps / seconds if self._counted_steps and seconds > 0 else None

  def eta_seconds(self, step: int) -> float | None:
    """Train time left for the steps after `step` at the measured rate."""
    rate = self.steps_per_second()
    return None if rate is None else (self.total_steps - step) / rate

  @contextlib.contextmanager
  def paused(self):
    """Excludes the time spent inside (evaluation, checkpointing) from the rate."""
    if self._started is None:
      yield
      return
    jax.block_until_ready(self._last_outputs)
    self._counted_seconds = self._train_seconds()
    try:
      yield
    finally:
      self._started = self._clock()

  def report(self, step: int, loss: float) -> None:
    """Shows `loss` and the ETA: on the bar, or as a line if `min_interval_s` has passed."""
    rate, eta = self.steps_per_second(), self.eta_seconds(step)
    speed = "-" if rate is None else f"{rate:.2f} steps/s"
    left = "-" if eta is None else format_duration(eta)
    if self._bar is not None:
      self._bar.set_postfix_str(f"loss {loss:.4f}, {speed}, ETA {left}")
      return
    now = self._clock()
    if jax.process_index() > 0:
      return
    if self._last_line is not None and now - self._last_line < self.min_interval_s:
      return
    self._last_line = now
    logging.info("step %d/%d (epoch %d/%d): loss %.4f, %s, ETA %s", step, self.total_steps,
                 (step - 1) // self.steps_per_epoch + 1, self.num_epochs, loss, speed, left)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def best_checkpoint(manager, metric: str) -> tuple[int, float] | None:
  """(step, value of `metric`) of an Orbax CheckpointManager's best checkpoint, if any."""
  step = manager.best_step()
  if step is None:
    return None
  metrics = manager.metrics(step) or {}
  return (step, metrics[metric]) if metric in metrics else None


def summary_lines(final: dict, workdir: str, *, best: tuple[int, float] | None,
                  best_metric: str, tensorboard: bool) -> list[str]:
  """The run's closing lines: eval-split WAR/UAR, best checkpoint and the output paths.

  The TensorBoard line only when the run wrote event files (`config.tensorboard`).
  """
  workdir = epath.Path(workdir)
  lines = [f"ferjax: done at step {final['step']}: {final['dataset']} {final['split']} "
           f"WAR {final['war']:.4f} UAR {final['uar']:.4f}"]
  if best is not None:
    lines.append(f"  best checkpoint: step {best[0]} ({best_metric} {best[1]:.4f}), "
                 f"{workdir / 'checkpoints' / str(best[0])}")
  lines.append(f"  metrics: {workdir / 'final_metrics.json'}")
  plots = sorted(str(p) for p in workdir.glob("*.png"))
  if plots:
    lines.append(f"  plots: {', '.join(plots)}")
  if tensorboard:
    lines.append(f"  TensorBoard: tensorboard --logdir {workdir}")
  return lines


def print_summary(lines: list[str]) -> None:
  """Prints the summary to stderr (process 0 only), after flushing pending log lines."""
  if jax.process_index() > 0:
    return
  logging.flush()
  print("\n".join(lines), file=sys.stderr, flush=True)
