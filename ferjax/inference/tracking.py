"""Greedy IoU tracking of face boxes across video frames.

A detection joins the track whose last box overlaps it most (IoU >= `min_iou`)
among tracks seen within the last `max_gap` frames, best pairs first; the rest
start new tracks. Enough for the few, slowly moving faces of FER videos.
"""

import numpy as np


def iou(a, b) -> float:
  """Intersection over union of two boxes (x0, y0, x1, y1)."""
  w = min(a[2], b[2]) - max(a[0], b[0])
  h = min(a[3], b[3]) - max(a[1], b[1])
  if w <= 0 or h <= 0:
    return 0.0
  inter = w * h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return float(inter / union) if union > 0 else 0.0


class IoUTracker:
  """Assigns track ids (0, 1, ...) to the boxes of successive frames."""

  def __init__(self, *, min_iou: float = 0.3, max_gap: int = 5):
    self.min_iou = min_iou
    self.max_gap = max_gap
    self._last: dict[int, tuple[int, tuple]] = {}  # track -> (frame, box)
    self._next = 0

  def update(self, frame: int, boxes: list) -> list[int]:
    """Track ids of `boxes` (x0, y0, x1, y1) seen in frame `frame` (frames increase)."""
    active = [t for t, (seen, _) in self._last.items() if frame - seen <= self.max_gap]
    pairs = sorted(((iou(self._last[t][1], box), t, k) for t in active
                    for k, box in enumerate(boxes)), reverse=True)
    ids = [-1] * len(boxes)
    used = set()
    for overlap, track, k in pairs:
      if overlap < self.min_iou:
        break
      if track in used or ids[k] >= 0:
        continue
      ids[k] = track
      used.add(track)
    for k in range(len(boxes)):
      if ids[k] < 0:
        ids[k] = self._next
        self._next += 1
    for k, box in enumerate(boxes):
      self._last[ids[k]] = (frame, tuple(np.asarray(box, float)))
    return ids
