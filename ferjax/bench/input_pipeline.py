"""Decode + augment throughput of ferjax's Grain input pipeline.

Runs the training stream exactly as `Experiment.train_iterator` builds it
(`pipeline.BatchLoader` with the config's augmentation, `pipeline.make_dataset`
with `worker_count` Grain worker processes); the consumer only counts batches.

The rate is measured where batches are made, not where they arrive: Grain
reads ahead (16 threads per process, up to 500 elements), so batches arrive in
bursts that say little about the steady rate. Each loader call records its
start and end time and process; `steady_rate` then counts the examples made
while every producing process was busy.
"""

import dataclasses
import os
import time

import ml_collections
import numpy as np

from ferjax.data import pipeline

STAMP_KEY = "_bench_production"


@dataclasses.dataclass
class StampedLoader:
  """`loader(k)` plus `STAMP_KEY`: [start, end, pid] of making that batch (picklable)."""
  loader: pipeline.BatchLoader

  def __call__(self, batch_number: int) -> dict[str, np.ndarray]:
    start = time.time()
    batch = self.loader(batch_number)
    batch[STAMP_KEY] = np.array([start, time.time(), os.getpid()], np.float64)
    return batch


def steady_rate(stamps: np.ndarray, examples: np.ndarray) -> tuple[float, float]:
  """(examples/s, window seconds) while every producing process was busy.

  Args:
    stamps: `[N, 3]` start time, end time, process id of each batch.
    examples: `[N]` real (unmasked) examples in each batch.

  The window runs from the last process's first start to the first process's
  last end; a batch made partly inside it counts in proportion:
  rate = sum_i n_i |[s_i, e_i] & W| / (e_i - s_i) / |W|.
  """
  start, end, pid = stamps[:, 0], stamps[:, 1], stamps[:, 2]
  processes = np.unique(pid)
  window_start = max(start[pid == p].min() for p in processes)
  window_end = min(end[pid == p].max() for p in processes)
  if window_end <= window_start:
    raise ValueError("the input stream was too short to see every worker busy at once: "
                     "raise --input_batches")
  inside = np.clip(np.minimum(end, window_end) - np.maximum(start, window_start), 0, None)
  fraction = inside / np.maximum(end - start, 1e-9)
  seconds = window_end - window_start
  return float(np.sum(fraction * examples) / seconds), float(seconds)


def measure(config: ml_collections.ConfigDict, workers: int, *, batches: int) -> dict:
  """Examples/s of the training stream of `config.dataset` at `workers` workers.

  The stream has `batches` host batches per producing process (the main
  process when `workers` is 0).
  """
  if workers < 0 or batches < 2:
    raise ValueError(f"--workers must be >= 0 and --input_batches >= 2, got {workers}, "
                     f"{batches}")
  split = pipeline.open_split(config.dataset, config.dataset.train_split, train=True)
  loader = pipeline.BatchLoader(split, config, train=True, global_batch_size=config.batch_size,
                                drop_remainder=config.train_drop_remainder)
  total = batches * max(workers, 1)
  dataset = pipeline.make_dataset(StampedLoader(loader), total, worker_count=workers,
                                  prefetch=config.input.prefetch)
  stamps, examples, startup = [], [], None
  start = time.perf_counter()
  iterator = iter(dataset)
  try:
    for _ in range(total):
      batch = next(iterator)   # counted, then dropped: only the stamps are kept
      stamps.append(batch[STAMP_KEY])
      examples.append(int(batch["mask"].sum()))
      if len(stamps) == 1:
        startup = time.perf_counter() - start
  finally:
    iterator.close()
  rate, seconds = steady_rate(np.stack(stamps), np.asarray(examples))
  result = {
      "workers": workers,
      "batches": total,
      "batch_size": loader.local_batch_size,
      "startup_s": startup,
      "window_s": seconds,
      "examples_per_s": rate,
  }
  if config.dataset.kind == "clip":
    result["frames_per_s"] = rate * config.input.num_frames
  return result
