"""Facial action parameters, per-class prototypes and expression blends.

An expression is a vector of facial action strengths `a` (one entry per name
in `ACTION_NAMES`, loosely after FACS action units), which `face_model` turns
into landmark displacements. Class `k` has a prototype `P[k]`; a sample with
blend distribution `p` (the soft label) and intensity `s` shows

  a = s * sum_k p[k] * P[k] + eps,

where `eps` is small class-independent jitter (every action, every class).
"""

import dataclasses
import functools

import numpy as np

from ferjax.data import labels

ACTION_NAMES: tuple[str, ...] = (
    "inner_brow_raise",    # AU1
    "outer_brow_raise",    # AU2
    "brow_lower",          # AU4: brows down and drawn together
    "upper_lid_raise",     # AU5 (negative: drooping lids)
    "cheek_raise",         # AU6: lower lids pushed up, cheek crease
    "lid_tighten",         # AU7
    "nose_wrinkle",        # AU9
    "upper_lip_raise",     # AU10
    "lip_corner_pull",     # AU12: corners up and out
    "unilateral_pull",     # AU14 on one side (the side is a nuisance draw)
    "lip_corner_depress",  # AU15
    "chin_raise",          # AU17: lower lip pushed up
    "lip_stretch",         # AU20: corners pulled sideways
    "lip_press",           # AU24: thin pressed lips
    "lips_part",           # AU25
    "jaw_drop",            # AU26/27
)
NUM_ACTIONS = len(ACTION_NAMES)
A = {name: i for i, name in enumerate(ACTION_NAMES)}

# Prototypes at intensity 1, in the spirit of EMFACS descriptions but
# exaggerated a little so that each class has at least two cues (upper and
# lower face) and survives occlusion of either half.
_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"cheek_raise": 1.0, "lid_tighten": 0.2, "lip_corner_pull": 1.0,
              "lips_part": 0.8},
    "sad": {"inner_brow_raise": 1.0, "brow_lower": 0.25, "upper_lid_raise": -0.6,
            "lip_corner_depress": 1.1, "chin_raise": 0.7},
    "surprise": {"inner_brow_raise": 1.0, "outer_brow_raise": 1.0,
                 "upper_lid_raise": 1.0, "jaw_drop": 1.0},
    "fear": {"inner_brow_raise": 1.0, "outer_brow_raise": 0.5, "brow_lower": 0.8,
             "upper_lid_raise": 1.0, "lip_stretch": 1.0, "lips_part": 1.0,
             "jaw_drop": 0.25},
    "disgust": {"brow_lower": 0.5, "lid_tighten": 0.5, "cheek_raise": 0.3,
                "nose_wrinkle": 1.0, "upper_lip_raise": 1.0,
                "lip_corner_depress": 0.6, "chin_raise": 0.5},
    "anger": {"brow_lower": 1.0, "upper_lid_raise": 0.4, "lid_tighten": 0.9,
              "lip_press": 1.0, "chin_raise": 0.4},
    "contempt": {"unilateral_pull": 1.0, "lid_tighten": 0.3},
}


@functools.cache
def prototypes(num_classes: int) -> np.ndarray:
  """Prototype action vectors of the canonical classes, `[num_classes, A]`."""
  table = np.zeros((num_classes, NUM_ACTIONS), np.float32)
  for k, name in enumerate(labels.class_names(num_classes)):
    for action, value in _PROTOTYPES[name].items():
      table[k, A[action]] = value
  table.setflags(write=False)
  return table


@dataclasses.dataclass(frozen=True)
class Expression:
  """One sampled expression.

  Attributes:
    label: the dominant (clean) class id.
    soft_label: `[K]` blend distribution, sums to 1, argmax = `label`.
    intensity: scale `s` applied to the blended prototype.
    actions: `[A]` action strengths, `s * soft_label @ P + eps`.
  """
  label: int
  soft_label: np.ndarray
  intensity: float
  actions: np.ndarray


def sample_expression(rng: np.random.Generator, label: int, *,
                      num_classes: int, ambiguity_rate: float,
                      intensity_range: tuple[float, float],
                      blend_weight_range: tuple[float, float],
                      jitter: float) -> Expression:
  """Samples intensity, an optional two-class blend and action jitter.

  With probability `ambiguity_rate` a second class `j != label` gets weight
  `w ~ U(blend_weight_range)` (< 0.5, so `label` stays dominant) and
  `soft_label = (1 - w) e_label + w e_j`; otherwise `soft_label = e_label`.
  `jitter` is the std of the class-independent Gaussian noise on every action.
  """
  if not 0 <= label < num_classes:
    raise ValueError(f"label {label} outside [0, {num_classes})")
  lo, hi = blend_weight_range
  if not 0.0 <= lo <= hi < 0.5:
    raise ValueError(f"blend_weight_range must satisfy 0 <= lo <= hi < 0.5, got {blend_weight_range}")
  soft = np.zeros(num_classes, np.float32)
  soft[label] = 1.0
  if rng.random() < ambiguity_rate:
    other = (label + rng.integers(1, num_classes)) % num_classes
    w = rng.uniform(lo, hi)
    soft[label] = 1.0 - w
    soft[other] = w
  intensity = float(rng.uniform(*intensity_range))
  actions = intensity * soft @ prototypes(num_classes)
  actions = actions + jitter * rng.standard_normal(NUM_ACTIONS)
  return Expression(label, soft, intensity, clip_actions(actions))


def clip_actions(actions: np.ndarray) -> np.ndarray:
  """Clips actions to their valid range: [0, 1.3], lid raise [-1, 1.3]."""
  out = np.clip(actions, 0.0, 1.3)
  lid = A["upper_lid_raise"]
  out[..., lid] = np.clip(actions[..., lid], -1.0, 1.3)
  return out.astype(np.float32)
