"""RAN's pose and occlusion test subsets as extra evaluation splits of a parent builder.

The lists come from kaiwang960112/Challenge-condition-FER-dataset (RAN, Wang
et al., TIP 2020; docs/datasets.md). Every line names an example
of the parent's test split by key and carries RAN's own class. Each list
becomes a split holding a copy of those parent examples, line by line, with:
- `label`: the list's class mapped to canonical (RAN-faithful ground truth);
- `parent_label`: the parent dataset's own label (read it instead for the
  `subset_label=parent` protocol);
- `occlusion`: the list's occlusion type (-1 where the list has none);
- `duplicate`: True when the key already occurred on an earlier line (filter
  these out for the `dedupe` protocol; RAN evaluated every line).
Examples of the parent's own splits carry parent_label = label, occlusion -1
and duplicate False.
"""

import dataclasses
import pathlib
import re
from typing import Any, Sequence

import numpy as np

from ferjax.data import features
from ferjax.data.builders import common


@dataclasses.dataclass(frozen=True)
class SubsetList:
  """One RAN list file: the split it becomes, where it is, how a line parses.

  `pattern` must fully match a line and name the groups `cls` and `key`, and
  optionally `occ`.
  """
  split: str
  path: str
  pattern: str


def subset_features(num_classes: int) -> dict[str, Any]:
  """The extra features every split of a builder with RAN subsets carries."""
  return {
      "parent_label": features.canonical_label(num_classes),
      "occlusion": common.scalar(np.int32),
      "duplicate": common.scalar(np.bool_),
  }


def parent_fields(label: int) -> dict[str, Any]:
  """Values of the subset features for an example of the parent's own splits."""
  return {"parent_label": label, "occlusion": -1, "duplicate": False}


def _load_subset_example(parent: common.Entry, label: int, occlusion: int,
                         duplicate: bool) -> dict[str, Any]:
  example = dict(parent.load())
  example.update(parent_label=example["label"], label=label, occlusion=occlusion,
                 duplicate=duplicate)
  return example


def subset_entries(report: common.BuildReport, ran_dir: pathlib.Path, *,
                   lists: Sequence[SubsetList], parent: Sequence[common.Entry],
                   to_canonical: Sequence[int], required: bool,
                   left_out: dict[str, str] | None = None) -> dict[str, list[common.Entry]]:
  """Entries of every subset list found under `ran_dir`, resolved against `parent`.

  Args:
    report: receives malformed lines as skipped items and notes.
    ran_dir: the RAN repository root (the folder holding RAF_DB_dir/, ...).
    lists: the parent dataset's subset lists.
    parent: entries of the parent's test split, keyed like the lists' keys
      (compared case-insensitively).
    to_canonical: list class id -> canonical id.
    required: raise when none of the lists exists (the user named ran_dir).
    left_out: key -> why the parent left that image out of its test split (e.g.
      no majority under the config's votes). Such lines are left out of the
      subset too, counted as excluded by protocol and named in a report note.

  Raises:
    AnnotationError: listing every key of a list missing from `parent` that is
      not in `left_out` either.
    LayoutError: when `required` and no list file exists.
  """
  by_key = {e.key.lower(): e for e in parent}
  left_out = {key.lower(): reason for key, reason in (left_out or {}).items()}
  splits = {}
  for subset in lists:
    path = ran_dir / subset.path
    if not path.exists():
      continue
    entries, missing, dropped, seen = [], [], [], set()
    for n, line in common.read_lines(path):
      match = re.fullmatch(subset.pattern, line)
      cls = int(match["cls"]) if match else -1
      if not 0 <= cls < len(to_canonical):
        reason = "malformed line" if match is None else f"unknown class {cls}"
        report.skip(subset.split, f"{path.name}:{n}", f"{reason}: {line!r}")
        continue
      key = match["key"].lower()
      if key in left_out and key not in by_key:
        report.exclude(subset.split, f"not in the parent test split: {left_out[key]}")
        dropped.append(f"{match['key']} ({left_out[key]})")
        continue
      if key not in by_key:
        missing.append(match["key"])
        continue
      occlusion = int(match["occ"]) if "occ" in match.groupdict() else -1
      entries.append(common.entry(f"{path.name}:{n}", _load_subset_example, by_key[key],
                                  to_canonical[cls], occlusion, key in seen))
      seen.add(key)
    if missing:
      raise common.AnnotationError(
          f"{path}: {len(missing)} key(s) not in the parent test split: {' '.join(missing)}")
    if dropped:
      report.notes.append(f"{path.name}: {len(dropped)} line(s) left out, their image is not "
                          f"in the parent test split: {', '.join(dropped)}")
    splits[subset.split] = entries
  if not splits:
    expected = ", ".join(str(ran_dir / s.path) for s in lists)
    if required:
      raise common.LayoutError(f"expected RAN subset lists at {expected}")
    report.notes.append(f"no RAN subset lists found ({expected}); subset splits not built")
  return splits
