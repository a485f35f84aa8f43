"""DFEW builder (`dfew`, configs official, lstpnet, former_dfer) and its fold helpers."""

from ferjax.data.builders.dfew.dfew import Dfew, native_to_canonical
from ferjax.data.builders.folds import fold_filter, fold_indices
