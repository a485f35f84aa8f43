"""Subject/clip folds of k-fold datasets (DFEW, BU-3DFE, Multi-PIE).

These builders store every example once, in split `all_folds` (the usual
split name `all`; TFDS reserves the name `all` for the union of all splits), with
`test_fold` (1..5): fold k's test set is `test_fold == k`, its train set the
rest. The per-record `test_fold` values are also stored in
`info.metadata['test_fold']['all_folds']` so a fold can be selected without
reading the records.
"""

from typing import Any, Callable, Mapping

import numpy as np
import tensorflow_datasets as tfds

NUM_FOLDS = 5
SPLIT = "all_folds"


def _check(fold: int) -> None:
  if not 1 <= fold <= NUM_FOLDS:
    raise ValueError(f"fold must be in 1..{NUM_FOLDS}, got {fold}")


def fold_filter(fold: int, train: bool) -> Callable[[Mapping[str, Any]], bool]:
  """Predicate on a decoded record: is it in fold `fold`'s train (or test) set?"""
  _check(fold)
  if train:
    return lambda record: int(record["test_fold"]) != fold
  return lambda record: int(record["test_fold"]) == fold


def fold_indices(info: tfds.core.DatasetInfo, fold: int, train: bool,
                 split: str = SPLIT) -> np.ndarray:
  """Record positions `[N_fold]` (int64, ascending) of fold `fold`'s train or test set.

  Reads `info.metadata['test_fold'][split]`, so no record is decoded.
  """
  _check(fold)
  try:
    test_folds = np.asarray(info.metadata["test_fold"][split])
  except (KeyError, TypeError):
    raise ValueError(f"{info.full_name} stores no test_fold metadata for split "
                     f"{split!r}") from None
  selected = test_folds != fold if train else test_folds == fold
  return np.flatnonzero(selected)
