"""ferjax's canonical expression classes, shared by every dataset and report.

Every builder maps its dataset's native label ids to this order (see
docs/datasets.md, 'Conventions') and reports print class names, never bare ids.
"""

CLASS_NAMES_8: tuple[str, ...] = (
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
CLASS_NAMES_7: tuple[str, ...] = CLASS_NAMES_8[:7]
CONTEMPT = 7


def class_names(num_classes: int) -> tuple[str, ...]:
  """Canonical class names for a 7- or 8-class label space."""
  if num_classes == 7:
    return CLASS_NAMES_7
  if num_classes == 8:
    return CLASS_NAMES_8
  raise ValueError(f"num_classes must be 7 or 8 for canonical labels, got {num_classes}")
