"""Tests of the synthetic FER generator (ferjax.data.synthetic), without TFDS files."""

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from ferjax.data.synthetic import clips, expressions, face_model, generate, render
from ferjax.data.synthetic.config import CONFIGS, SyntheticFerConfig

SMALL = CONFIGS["images_small"]
CLIPS = CONFIGS["clips_small"]


def _decode(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_same_seed_same_bytes_different_seed_different_data():
  a = generate.image_example(SMALL, "train", 5, 2, 2)
  b = generate.image_example(SMALL, "train", 5, 2, 2)
  assert a["image"] == b["image"]
  other = generate.image_example(dataclasses.replace(SMALL, seed=1), "train", 5, 2, 2)
  assert other["image"] != a["image"]
  assert not np.array_equal(generate.label_plan(SMALL, "train")[0],
                            generate.label_plan(dataclasses.replace(SMALL, seed=1), "train")[0])


def test_parallel_generation_matches_serial():
  serial = [e["image"] for _, e in generate.generate(SMALL, "test", indices=range(6))]
  parallel = [e["image"] for _, e in generate.generate(SMALL, "test", num_workers=2,
                                                         chunk_size=2, indices=range(6))]
  assert serial == parallel


def test_clip_bytes_deterministic():
  a = generate.clip_example(CLIPS, "test", 3, 1, 1)
  b = generate.clip_example(CLIPS, "test", 3, 1, 1)
  assert a["frames"] == b["frames"] and len(a["frames"]) == CLIPS.num_frames


def test_identity_pools_disjoint_and_used():
  train, test = generate.identity_pool(SMALL, "train"), generate.identity_pool(SMALL, "test")
  assert not set(train) & set(test)
  ids = {generate.image_example(SMALL, "test", i, 0, 0)["identity"] for i in range(8)}
  assert ids <= set(test)
  assert generate.identity(SMALL, 3) == generate.identity(SMALL, 3)
  assert generate.identity(SMALL, 3) != generate.identity(SMALL, 4)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_label_noise_flips_exact_fraction_of_train_only(noise):
  cfg = dataclasses.replace(SMALL, num_train=1000, num_test=350, label_noise=noise)
  clean, noisy = generate.label_plan(cfg, "train")
  assert (clean != noisy).sum() == round(noise * 1000)
  assert np.array_equal(np.bincount(clean), np.full(7, 1000 // 7) + (np.arange(7) < 1000 % 7))
  test_clean, test_noisy = generate.label_plan(cfg, "test")
  assert np.array_equal(test_clean, test_noisy)
  assert CONFIGS["images_noisy"].label_noise == 0.3


def test_soft_labels_and_blends():
  rng = np.random.default_rng(0)
  blends = 0
  for i in range(400):
    e = expressions.sample_expression(rng, i % 7, num_classes=7, ambiguity_rate=0.3,
                                      intensity_range=(0.6, 1.0),
                                      blend_weight_range=(0.15, 0.4), jitter=0.0)
    assert e.soft_label.sum() == pytest.approx(1.0, abs=1e-6)
    assert e.soft_label.argmax() == e.label
    nonzero = np.flatnonzero(e.soft_label)
    if len(nonzero) == 2:
      blends += 1
      assert 0.15 <= np.sort(e.soft_label[nonzero])[0] <= 0.4
    # With no jitter the actions are the intensity-scaled blend of prototypes.
    expected = expressions.clip_actions(e.intensity * e.soft_label @ expressions.prototypes(7))
    np.testing.assert_allclose(e.actions, expected, atol=1e-6)
    assert 0.6 <= e.intensity <= 1.0
  assert 0.22 < blends / 400 < 0.38


def test_pose_distributions_honour_limits():
  uniform = CONFIGS["images_pose"]
  rng = np.random.default_rng(0)
  poses = np.array([dataclasses.astuple(generate.sample_pose(rng, uniform)) for _ in range(2000)])
  assert np.abs(poses).max(0).tolist() <= [90, 30, 20]
  assert (np.abs(poses[:, 0]) > 60).mean() == pytest.approx(1 / 3, abs=0.05)
  frontal = np.array([dataclasses.astuple(generate.sample_pose(rng, SMALL)) for _ in range(2000)])
  assert np.abs(frontal).max(0).tolist() <= [90, 30, 20]
  assert frontal[:, 0].std() == pytest.approx(SMALL.yaw_std, rel=0.1)


def test_expression_profile_windows():
  rng = np.random.default_rng(0)
  for _ in range(200):
    p, start, end = clips.expression_profile(rng, 16, windowed=True, window_range=(2, 4))
    assert 2 <= end - start <= 4
    assert np.all(p[start:end] == 1.0)
    outside = np.r_[p[:max(start - 2, 0)], p[end + 2:]]
    assert np.all(outside == 0.0) and np.all(p[[start - 1, end % 16]] < 1.0)
    p, start, end = clips.expression_profile(rng, 16, windowed=False, window_range=(2, 4))
    assert end - start >= 8 and start <= 7 and np.all(p[start:end] == 1.0)
    assert np.all(np.diff(p[:start + 1]) >= 0)


def test_clip_example_window_fields_and_class_independent_nuisance():
  a = generate.clip_example(CLIPS, "train", 7, 3, 3)
  b = generate.clip_example(CLIPS, "train", 7, 0, 0)
  assert 0 <= a["apex_start"] < a["apex_end"] <= CLIPS.num_frames
  # Timing, blinks, pose, identity and scene come from streams that never see the class.
  for key in ("apex_start", "apex_end", "windowed", "yaw", "pitch", "roll", "identity",
              "occluded"):
    assert a[key] == b[key]


def test_blinks_last_three_frames():
  closure = clips.blink_profile(np.random.default_rng(0), 200, 0.05)
  assert set(np.unique(closure).tolist()) <= {0.0, 0.5, 1.0}
  peaks = np.flatnonzero(closure == 1.0)
  assert len(peaks) > 3
  inner = peaks[(peaks > 0) & (peaks < 199)]
  assert np.all(closure[inner - 1] == 0.5) and np.all(closure[inner + 1] == 0.5)


def test_class_changes_only_face_pixels():
  """Same nuisance, two classes: the background, lighting and noise are identical."""
  rng = np.random.default_rng(3)
  person = face_model.sample_identity(rng)
  scene = render.sample_scene(rng, occlusion_rate=0.0)
  background = render.render_background(scene, 128)
  protos = expressions.prototypes(7)
  images = [render.render_face(background, person, protos[k], render.Pose(0, 0, 0), scene,
                               size=64, noise_rng=np.random.default_rng(9)) for k in (0, 3)]
  changed = np.any(images[0] != images[1], axis=-1)
  assert changed.any()
  rows, cols = np.nonzero(changed)
  assert rows.min() >= 6 and cols.min() >= 8 and cols.max() <= 56


def test_rotation_matches_hand_computed_yaw_and_pitch():
  nose = np.array([0.0, 0.0, 1.0])
  np.testing.assert_allclose(render.rotation(render.Pose(90, 0, 0)) @ nose, [1, 0, 0], atol=1e-12)
  np.testing.assert_allclose(render.rotation(render.Pose(0, 30, 0)) @ nose,
                             [0, 0.5, np.sqrt(3) / 2], atol=1e-12)
  r = render.rotation(render.Pose(37, -12, 8))
  np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_lift_puts_points_on_the_head_surface():
  person = face_model.sample_identity(np.random.default_rng(1))
  centers, radii = face_model.ellipsoids(person, 0.0)
  xyd = np.array([[0.1, 0.2, 0.0], [-0.3, -0.5, 0.0], [0.0, 0.0, 0.25]])
  pts, normals = face_model.lift(xyd, centers, radii)
  base = pts - [0, 0, 1] * xyd[:, 2:3]
  level = np.min([np.sum(((base - c) / r) ** 2, axis=1) for c, r in zip(centers, radii)], 0)
  np.testing.assert_allclose(level, 1.0, atol=1e-9)
  np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-9)


def test_prototypes_and_config_validation():
  p8 = expressions.prototypes(8)
  assert p8.shape == (8, expressions.NUM_ACTIONS) and not p8[0].any()
  assert len({tuple(row) for row in p8}) == 8
  with pytest.raises(ValueError, match="num_classes"):
    SyntheticFerConfig(name="bad", num_classes=6)
  with pytest.raises(ValueError, match="unknown split"):
    generate.label_plan(SMALL, "validation")


def test_image_example_fields():
  e = generate.image_example(SMALL, "train", 12, 4, 1)
  assert _decode(e["image"]).shape == (32, 32, 3)
  assert e["id"] == "train_000012" and e["label"] == 1 and e["clean_label"] == 4
  assert e["native_label"] == 4 and e["soft_label"].shape == (7,)
