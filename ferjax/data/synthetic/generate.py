"""Deterministic generation of synthetic FER examples (images and clips).

Every random choice of example `index` in `split` comes from generators
seeded with `(seed, split, index, stream)`, identities from `(seed, identity)`
and the split's label plan from `(seed, split)`, so the bytes do not depend on
worker count or order. Streams are separate for the expression, the nuisance
(identity draw, pose, scene, noise), blinks and timing, so nuisance draws are
identical whatever the class.
"""

import concurrent.futures
import dataclasses
import multiprocessing
from collections.abc import Iterator

import numpy as np

from ferjax.data.synthetic import clips, expressions, face_model, render
from ferjax.data.synthetic.config import SyntheticFerConfig

SPLITS = ("train", "test")
_STREAMS = {"expression": 0, "nuisance": 1, "blink": 2, "timing": 3}
_EXAMPLE, _IDENTITY, _PLAN = 0, 1, 2


def _split_id(split: str) -> int:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  return SPLITS.index(split)


def example_rng(config: SyntheticFerConfig, split: str, index: int,
                stream: str) -> np.random.Generator:
  """The generator of one stream of one example."""
  return np.random.default_rng(
      [config.seed, _EXAMPLE, _split_id(split), index, _STREAMS[stream]])


def identity(config: SyntheticFerConfig, identity_id: int) -> face_model.Identity:
  """The traits of identity `identity_id` (a function of seed and id only)."""
  return face_model.sample_identity(np.random.default_rng([config.seed, _IDENTITY, identity_id]))


def identity_pool(config: SyntheticFerConfig, split: str) -> range:
  """Identity ids of a split: train and test pools are disjoint."""
  if _split_id(split) == 0:
    return range(config.num_train_identities)
  return range(config.num_train_identities,
               config.num_train_identities + config.num_test_identities)


def num_examples(config: SyntheticFerConfig, split: str) -> int:
  return config.num_train if _split_id(split) == 0 else config.num_test


def label_plan(config: SyntheticFerConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Clean and training labels `[N]` of a split.

  Clean labels are balanced (`i mod K`, permuted). In the train split exactly
  `round(label_noise * N)` examples, chosen at random, get a different label
  drawn uniformly from the other K - 1 classes; test labels stay clean.
  """
  n, k = num_examples(config, split), config.num_classes
  rng = np.random.default_rng([config.seed, _PLAN, _split_id(split)])
  clean = rng.permutation(np.arange(n) % k)
  noisy = clean.copy()
  if _split_id(split) == 0 and config.label_noise > 0:
    flip = rng.permutation(n)[:round(config.label_noise * n)]
    noisy[flip] = (clean[flip] + rng.integers(1, k, len(flip))) % k
  return clean, noisy


def sample_pose(rng: np.random.Generator, config: SyntheticFerConfig) -> render.Pose:
  """Frontal-heavy (clipped normals) or uniform head pose, in degrees."""
  limits = np.array([config.max_yaw, config.max_pitch, config.max_roll])
  if config.pose == "uniform":
    angles = rng.uniform(-limits, limits)
  else:
    stds = np.array([config.yaw_std, config.pitch_std, config.roll_std])
    angles = np.clip(rng.normal(0.0, stds), -limits, limits)
  return render.Pose(*(float(a) for a in angles))


@dataclasses.dataclass(frozen=True)
class _Common:
  """What images and clips share: expression, identity, scene, side, gaze."""
  expression: expressions.Expression
  identity_id: int
  identity: face_model.Identity
  scene: render.Scene
  side: int
  gaze: np.ndarray


def _common(config: SyntheticFerConfig, split: str, index: int, label: int,
            nuisance: np.random.Generator) -> _Common:
  expr = expressions.sample_expression(
      example_rng(config, split, index, "expression"), label,
      num_classes=config.num_classes, ambiguity_rate=config.ambiguity_rate,
      intensity_range=config.intensity_range,
      blend_weight_range=config.blend_weight_range, jitter=config.action_jitter)
  pool = identity_pool(config, split)
  identity_id = int(pool[nuisance.integers(len(pool))])
  return _Common(expr, identity_id, identity(config, identity_id),
                 render.sample_scene(nuisance, config.occlusion_rate),
                 int(nuisance.choice([-1, 1])), nuisance.uniform(-0.7, 0.7, 2))


def _labels(split: str, index: int, c: _Common, noisy: int) -> dict:
  return {
      "label": noisy, "clean_label": c.expression.label,
      "native_label": c.expression.label,
      "soft_label": c.expression.soft_label.astype(np.float32),
      "intensity": np.float32(c.expression.intensity),
      "identity": c.identity_id, "occluded": c.scene.occluder,
      "id": f"{split}_{index:06d}"}


def image_example(config: SyntheticFerConfig, split: str, index: int, clean: int,
                  noisy: int) -> dict:
  """One image example (feature dict of the `images` configs)."""
  nuisance = example_rng(config, split, index, "nuisance")
  c = _common(config, split, index, clean, nuisance)
  pose = sample_pose(nuisance, config)
  blink = nuisance.uniform(0.3, 1.0) if nuisance.random() < config.blink_rate else 0.0
  background = render.render_background(c.scene, config.image_size * config.supersample)
  pixels = render.render_face(background, c.identity, c.expression.actions, pose, c.scene,
                              size=config.image_size, noise_rng=nuisance, blink=blink,
                              gaze=c.gaze, side=c.side)
  return {"image": render.encode(pixels, "PNG"), "yaw": np.float32(pose.yaw),
          "pitch": np.float32(pose.pitch), "roll": np.float32(pose.roll),
          **_labels(split, index, c, noisy)}


def clip_example(config: SyntheticFerConfig, split: str, index: int, clean: int,
                 noisy: int) -> dict:
  """One clip example (feature dict of the `clips` configs)."""
  nuisance = example_rng(config, split, index, "nuisance")
  c = _common(config, split, index, clean, nuisance)
  t_len = config.num_frames
  timing = example_rng(config, split, index, "timing")
  windowed = bool(timing.random() < config.window_fraction)
  profile, apex_start, apex_end = clips.expression_profile(
      timing, t_len, windowed=windowed, window_range=config.window_range)
  blinks = clips.blink_profile(example_rng(config, split, index, "blink"), t_len,
                               config.blink_rate)
  poses = clips.head_motion(nuisance, t_len, sample_pose(nuisance, config),
                            amplitude=config.head_motion,
                            limits=(config.max_yaw, config.max_pitch, config.max_roll))
  background = render.render_background(c.scene, config.image_size * config.supersample)
  frames = []
  for t in range(t_len):
    actions = expressions.clip_actions(
        profile[t] * c.expression.actions
        + 0.5 * config.action_jitter * nuisance.standard_normal(expressions.NUM_ACTIONS))
    pixels = render.render_face(background, c.identity, actions, poses[t], c.scene,
                                size=config.image_size, noise_rng=nuisance,
                                blink=float(blinks[t]), gaze=c.gaze, side=c.side)
    frames.append(render.encode(pixels, "JPEG"))
  return {"frames": frames, "num_frames": t_len,
          "yaw": np.float32(np.mean([p.yaw for p in poses])),
          "pitch": np.float32(np.mean([p.pitch for p in poses])),
          "roll": np.float32(np.mean([p.roll for p in poses])),
          "apex_start": apex_start, "apex_end": apex_end, "windowed": windowed,
          **_labels(split, index, c, noisy)}


def _make_chunk(config: SyntheticFerConfig, split: str, indices: list[int],
                clean: list[int], noisy: list[int]) -> list[dict]:
  make = image_example if config.kind == "images" else clip_example
  return [make(config, split, i, c, n) for i, c, n in zip(indices, clean, noisy)]


def generate(config: SyntheticFerConfig, split: str, *, num_workers: int = 0,
             chunk_size: int = 32, indices: range | None = None) -> Iterator[tuple[int, dict]]:
  """Yields `(index, example)` in index order.

  Args:
    config: the dataset knobs.
    split: "train" or "test".
    num_workers: worker processes (0: generate in this process).
    chunk_size: examples per task sent to a worker.
    indices: a sub-range of the split (default: all of it).
  """
  clean, noisy = label_plan(config, split)
  indices = range(len(clean)) if indices is None else indices
  chunks = [indices[i:i + chunk_size] for i in range(0, len(indices), chunk_size)]
  args = [(config, split, list(ch), clean[ch.start:ch.stop:ch.step].tolist(),
           noisy[ch.start:ch.stop:ch.step].tolist()) for ch in chunks]
  if num_workers <= 0:
    results = (_make_chunk(*a) for a in args)
    for ch, examples in zip(chunks, results):
      yield from zip(ch, examples)
    return
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
    for ch, examples in zip(chunks, pool.map(_make_chunk, *zip(*args))):
      yield from zip(ch, examples)
