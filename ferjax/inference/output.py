"""Writing prediction records as JSON lines (stdout or .jsonl) or CSV, one row per face.

Rows are flushed as they come, so an interrupted run keeps what it wrote.
"""

import csv
import json
import sys

from ferjax.inference.detection import LANDMARK_NAMES

_FIXED = ("file", "frame", "time", "last_frame", "end_time", "track", "face", "x0", "y0", "x1",
          "y1", "score")


class RecordWriter:
  """`write(record)` to `path` (.jsonl / .json: JSON lines; .csv: CSV), or stdout if None."""

  def __init__(self, path: str | None, class_names):
    self.class_names = tuple(class_names)
    self.csv = bool(path) and path.lower().endswith(".csv")
    self._file = open(path, "w", newline="") if path else sys.stdout
    self._csv = None
    if self.csv:
      self._csv = csv.writer(self._file)
      self._csv.writerow(_FIXED + tuple(f"{n}_{a}" for n in LANDMARK_NAMES for a in "xy") +
                         ("label",) + tuple(f"p_{n}" for n in self.class_names))

  def write(self, record: dict) -> None:
    if self._csv is None:
      self._file.write(json.dumps(record) + "\n")
    else:
      landmarks = record.get("landmarks") or {}
      row = [record.get(k) for k in _FIXED[:7]] + list(record["box"]) + [record["score"]]
      row += [v for n in LANDMARK_NAMES for v in landmarks.get(n, (None, None))]
      row += [record["label"]] + [record["probabilities"][n] for n in self.class_names]
      self._csv.writerow(["" if v is None else v for v in row])
    self._file.flush()

  def close(self) -> None:
    if self._file is not sys.stdout:
      self._file.close()
