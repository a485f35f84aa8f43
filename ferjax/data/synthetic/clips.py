"""Temporal structure of synthetic clips: expression profile, blinks, head motion.

A clip of T frames shows `actions_t = profile[t] * actions + eps_t`: the
expression rises (onset), holds (apex, profile = 1 on frames
`[apex_start, apex_end)`) and decays (offset). A windowed clip is neutral
outside a short apex window. Blinks and head motion are drawn from their own
generators, so they are independent of the class.
"""

import numpy as np

from ferjax.data.synthetic.render import Pose


def _smoothstep(x: np.ndarray) -> np.ndarray:
  return x * x * (3 - 2 * x)


def expression_profile(rng: np.random.Generator, num_frames: int, *, windowed: bool,
                       window_range: tuple[int, int]) -> tuple[np.ndarray, int, int]:
  """Samples an onset -> apex -> offset profile.

  Unwindowed: onset of 2-4 frames starting in the first quarter, an apex of
  at least T/2 frames, then an offset of 2-4 frames (possibly cut by the
  clip's end). Windowed: an apex of `window_range` frames (inclusive) with 1-2
  frame ramps at a random position, neutral elsewhere.

  Returns:
    profile `[T]` in [0, 1], apex_start, apex_end (half-open apex window).
  """
  t_len = num_frames
  if windowed:
    lo, hi = window_range
    if not 1 <= lo <= hi <= t_len - 4:
      raise ValueError(f"window_range {window_range} must satisfy 1 <= lo <= hi <= num_frames - 4")
    apex = int(rng.integers(lo, hi + 1))
    onset, offset = (int(v) for v in rng.integers(1, 3, 2))
    start = int(rng.integers(onset, t_len - apex - offset + 1))
  else:
    if t_len < 8:
      raise ValueError(f"num_frames must be >= 8 for onset/apex/offset clips, got {t_len}")
    onset, offset = (int(v) for v in rng.integers(2, 5, 2))
    start = onset + int(rng.integers(0, t_len // 4))
    min_apex = t_len // 2
    apex = int(rng.integers(min(min_apex, t_len - start), t_len - start + 1))
  end = start + apex
  frames = np.arange(t_len)
  rise = _smoothstep(np.clip((frames - (start - onset - 1)) / (onset + 1), 0.0, 1.0))
  fall = _smoothstep(np.clip(((end + offset) - frames) / (offset + 1), 0.0, 1.0))
  profile = np.minimum(rise, fall).astype(np.float32)
  profile[start:end] = 1.0
  return profile, start, end


def blink_profile(rng: np.random.Generator, num_frames: int, rate: float) -> np.ndarray:
  """Eyelid closure `[T]`: blinks start with probability `rate` per frame and
  last three frames (closure 0.5, 1, 0.5)."""
  closure = np.zeros(num_frames + 2, np.float32)
  starts = rng.random(num_frames) < rate
  t = 0
  while t < num_frames:
    if starts[t]:
      closure[t:t + 3] = np.maximum(closure[t:t + 3], [0.5, 1.0, 0.5])
      t += 4
    else:
      t += 1
  return closure[:num_frames]


def head_motion(rng: np.random.Generator, num_frames: int, base: Pose, *,
                amplitude: tuple[float, float, float],
                limits: tuple[float, float, float]) -> list[Pose]:
  """Smooth head motion around `base`: per angle a sinusoid of random
  frequency (0.2-1.2 cycles per clip), phase and amplitude up to `amplitude`
  degrees, clipped to +-`limits` degrees."""
  t = np.arange(num_frames) / num_frames
  angles = []
  for centre, amp, limit in zip((base.yaw, base.pitch, base.roll), amplitude, limits):
    a = rng.uniform(0, amp)
    f = rng.uniform(0.2, 1.2)
    phase = rng.uniform(0, 2 * np.pi)
    track = centre + a * (np.sin(2 * np.pi * f * t + phase) - np.sin(phase))
    angles.append(np.clip(track, -limit, limit))
  return [Pose(float(y), float(p), float(r)) for y, p, r in zip(*angles)]
