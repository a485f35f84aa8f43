"""Segment-based frame sampling for clips (TSN style, as in LSTPNet and Former-DFER).

A clip of n frames is split into K segments; from each segment an offset p is
chosen and the d consecutive frames p, p+1, ... are taken, the index clamped
at the last frame n-1 (docs/methods/lstpnet.md, 'Data protocol'; K=8, d=2: 16 frames).
With L = n - d + 1 valid start positions:

  train: if L // K > 0: p_k = k (L // K) + U{0 .. L // K - 1}, independently per k;
         elif n > K:    p = sorted K draws from U{0 .. L - 1};
         else:          p_k = 0.
  test:  if n > K + d - 1: p_k = int(tick / 2 + tick k), tick = L / K (float64);
         else:            p_k = 0.
"""

import numpy as np


def segment_indices(num_frames_available: int, num_segments: int, frames_per_segment: int,
                    *, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
  """Frame indices `[num_segments * frames_per_segment]` (int64) of one clip.

  Args:
    num_frames_available: n, the clip's frame count (>= 1).
    num_segments: K, the number of segments.
    frames_per_segment: d, consecutive frames taken from each segment.
    train: random offsets within segments (True) or segment midpoints (False).
    rng: the random generator; required when `train`.

  Raises:
    ValueError: on n < 1, K < 1, d < 1, or `train` without `rng`.
  """
  n, k, d = num_frames_available, num_segments, frames_per_segment
  if n < 1 or k < 1 or d < 1:
    raise ValueError(f"segment_indices needs num_frames_available, num_segments and "
                     f"frames_per_segment >= 1, got {n}, {k}, {d}")
  starts = n - d + 1
  if train:
    if rng is None:
      raise ValueError("segment_indices(train=True) needs an rng (np.random.Generator)")
    length = starts // k
    if length > 0:
      offsets = np.arange(k) * length + rng.integers(length, size=k)
    elif n > k:
      offsets = np.sort(rng.integers(starts, size=k))
    else:
      offsets = np.zeros(k, np.int64)
  elif n > k + d - 1:
    tick = starts / k
    offsets = (tick / 2.0 + tick * np.arange(k, dtype=np.float64)).astype(np.int64)
  else:
    offsets = np.zeros(k, np.int64)
  # Offsets are <= n - 1, so clamping p + i at n - 1 repeats the last frame.
  return np.minimum(offsets[:, None] + np.arange(d), n - 1).reshape(-1).astype(np.int64)


def keep_clip(num_frames: int, min_frames: int) -> bool:
  """The short-clip filter: keep clips with at least `min_frames` frames (0 keeps all)."""
  return num_frames >= min_frames
