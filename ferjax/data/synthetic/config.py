"""Knobs of the synthetic FER dataset and its named builder configs."""

import dataclasses

import tensorflow_datasets as tfds


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticFerConfig(tfds.core.BuilderConfig):
  """All knobs of one synthetic_fer config (see docs/synthetic.md).

  Attributes:
    kind: "images" or "clips".
    image_size: output height = width in pixels.
    supersample: canvas factor for antialiased parts.
    num_train, num_test: examples per split.
    num_train_identities, num_test_identities: disjoint identity pools.
    num_classes: 7 (no contempt) or 8.
    pose: "frontal" (truncated normals with the *_std below) or "uniform"
      (uniform on +-max_*).
    max_yaw, max_pitch, max_roll: pose limits in degrees.
    yaw_std, pitch_std, roll_std: stds of the frontal distribution.
    intensity_range: uniform range of the expression intensity.
    ambiguity_rate: fraction of examples blending two classes.
    blend_weight_range: uniform range of the minority class weight (< 0.5).
    action_jitter: std of class-independent noise on every action.
    label_noise: fraction of training labels flipped to another class.
    occlusion_rate: fraction of examples with an occluder.
    blink_rate: images: probability of a partial blink; clips: per-frame
      probability that a blink starts.
    num_frames: frames per clip.
    window_fraction: fraction of clips neutral outside a short apex window.
    window_range: apex length (frames, inclusive) of windowed clips.
    head_motion: max yaw/pitch/roll amplitude (degrees) of clip head motion.
    seed: the dataset seed; examples derive their generators from
      (seed, split, index).
  """
  kind: str = "images"
  image_size: int = 64
  supersample: int = 2
  num_train: int = 8000
  num_test: int = 2000
  num_train_identities: int = 400
  num_test_identities: int = 100
  num_classes: int = 7
  pose: str = "frontal"
  max_yaw: float = 90.0
  max_pitch: float = 30.0
  max_roll: float = 20.0
  yaw_std: float = 20.0
  pitch_std: float = 10.0
  roll_std: float = 6.0
  intensity_range: tuple[float, float] = (0.7, 1.0)
  ambiguity_rate: float = 0.15
  blend_weight_range: tuple[float, float] = (0.1, 0.35)
  action_jitter: float = 0.05
  label_noise: float = 0.0
  occlusion_rate: float = 0.1
  blink_rate: float = 0.05
  num_frames: int = 16
  window_fraction: float = 0.0
  window_range: tuple[int, int] = (2, 4)
  head_motion: tuple[float, float, float] = (12.0, 6.0, 4.0)
  seed: int = 0

  def __post_init__(self):
    checks = [
        (self.kind in ("images", "clips"), f"kind must be 'images' or 'clips', got {self.kind!r}"),
        (self.pose in ("frontal", "uniform"), f"pose must be 'frontal' or 'uniform', got {self.pose!r}"),
        (self.num_classes in (7, 8), f"num_classes must be 7 or 8, got {self.num_classes}"),
        (0.0 <= self.label_noise <= 1.0, f"label_noise must be in [0, 1], got {self.label_noise}"),
        (min(self.num_train_identities, self.num_test_identities) >= 1,
         "num_train_identities and num_test_identities must be >= 1"),
        (self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}"),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(f"synthetic_fer config {self.name!r}: {message}")


_IMAGES = dict(kind="images", image_size=64, num_train=8000, num_test=2000,
               num_train_identities=400, num_test_identities=100)
# 1.1.0: clip frames at the images' 64x64 (were 48x48), so the quickstart's face
# model can start a clip model's backbone at the scale it was trained on.
_CLIPS = dict(kind="clips", image_size=64, num_train=2000, num_test=500,
              num_train_identities=200, num_test_identities=50, num_frames=16,
              window_fraction=0.25, blink_rate=0.04, version="1.1.0",
              release_notes={"1.1.0": "64x64 frames (were 48x48)."})

CONFIGS: dict[str, SyntheticFerConfig] = {c.name: c for c in [
    SyntheticFerConfig(
        name="images", description="64x64, 7 classes, frontal-heavy pose (default).",
        **_IMAGES),
    SyntheticFerConfig(
        name="images_pose", description="As images, yaw uniform in [-90, 90], pitch in [-30, 30].",
        pose="uniform", **_IMAGES),
    SyntheticFerConfig(
        name="images_noisy", description="As images, 30% of training labels flipped.",
        label_noise=0.3, **_IMAGES),
    SyntheticFerConfig(
        name="images_small", description="32x32, 300 train / 200 test: for tests.",
        kind="images", image_size=32, num_train=300, num_test=200,
        num_train_identities=30, num_test_identities=20),
    SyntheticFerConfig(
        name="images_smoke",
        description="32x32, 2000 train / 400 test, near-frontal, full-strength, unambiguous, "
                    "no occluders: the configs' one-minute :smoke runs.",
        kind="images", image_size=32, num_train=2000, num_test=400, num_train_identities=100,
        num_test_identities=25, yaw_std=8.0, pitch_std=4.0, roll_std=3.0,
        intensity_range=(0.9, 1.0), ambiguity_rate=0.0, occlusion_rate=0.0, blink_rate=0.0),
    SyntheticFerConfig(
        name="clips", description="16 frames of 64x64, a quarter of the clips windowed.",
        **_CLIPS),
    SyntheticFerConfig(
        name="clips_window", description="As clips, every clip expressive only in a 2-4 frame window.",
        **{**_CLIPS, "window_fraction": 1.0}),
    SyntheticFerConfig(
        name="clips_smoke",
        description="8 frames of 32x32, 1000 train / 200 test, easy as images_smoke, never "
                    "windowed: lstpnet.py's :smoke run.",
        kind="clips", image_size=32, num_train=1000, num_test=200, num_train_identities=100,
        num_test_identities=25, num_frames=8, yaw_std=8.0, pitch_std=4.0, roll_std=3.0,
        intensity_range=(0.9, 1.0), ambiguity_rate=0.0, occlusion_rate=0.0, blink_rate=0.0,
        head_motion=(4.0, 2.0, 1.0), version="1.1.0",
        release_notes={"1.1.0": "1000 train / 200 test clips of 100 / 25 identities "
                                "(were 400 / 100 of 40 / 10)."}),
    SyntheticFerConfig(
        name="clips_small", description="16 frames of 32x32, 100 train / 50 test: for tests.",
        kind="clips", image_size=32, num_train=100, num_test=50, num_train_identities=20,
        num_test_identities=10, num_frames=16, window_fraction=0.5, blink_rate=0.04),
]}
