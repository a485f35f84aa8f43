"""Mixup/CutMix (ferjax.mix): targets, boxes and clips against hand-computed values."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ferjax import errors, mix
from ferjax.objectives import center_cosine, cross_entropy, soft_label_mining


def _input_config(mixup_alpha=0.0, cutmix_alpha=0.0, mix_prob=1.0, mix_switch_prob=0.5):
  return ml_collections.ConfigDict(dict(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                                        mix_prob=mix_prob, mix_switch_prob=mix_switch_prob))


def test_mixed_targets_pair_each_example_with_the_reversed_batch():
  targets = mix.mixed_targets(jnp.asarray([0, 2, 1]), 0.7, 3)
  # Partners by position: 0 <-> 2 (labels 0 and 1), 1 <-> 1 (label 2).
  np.testing.assert_allclose(targets, [[0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [0.3, 0.7, 0.0]],
                             atol=1e-7)


def test_cutmix_box_and_its_corrected_lambda():
  # lam = 0.75: sides sqrt(0.25) x (4, 6) = (2, 3), halves (1, 1) around (1, 4):
  # rows 0-1, columns 3-4.
  keep = np.asarray(mix.cutmix_keep(4, 6, jnp.float32(0.75), jnp.asarray([1, 4])))
  expected = np.ones((4, 6), np.float32)
  expected[0:2, 3:5] = 0.0
  np.testing.assert_array_equal(keep, expected)
  assert keep.mean() == pytest.approx(1 - 4 / 24)
  # A box centred on the corner is clipped to one pixel: lam = 1 - 1/24.
  corner = np.asarray(mix.cutmix_keep(4, 6, jnp.float32(0.75), jnp.asarray([0, 0])))
  assert corner[0, 0] == 0.0 and corner.sum() == 23


def test_mix_pixels_and_cross_entropy_on_the_soft_target():
  images = np.stack([np.full((2, 2, 3), 10, np.uint8), np.full((2, 2, 3), 250, np.uint8)])
  mixed = np.asarray(mix.mix_pixels(jnp.asarray(images), jnp.full((2, 2), 0.25)))
  np.testing.assert_allclose(mixed[0], 0.25 * 10 + 0.75 * 250)
  np.testing.assert_allclose(mixed[1], 0.25 * 250 + 0.75 * 10)

  # CE with smoothing s = 0.1 on t = (0.25, 0.75, 0): smooth(t) = 0.9 t + 0.1 / 3.
  logits = np.asarray([[2.0, 0.5, -1.0]], np.float32)
  batch = {"label": jnp.asarray([0]), "mask": jnp.asarray([True]),
           "soft_target": jnp.asarray([[0.25, 0.75, 0.0]])}
  loss, _ = cross_entropy.CrossEntropy(3, 0.1)({"logits": jnp.asarray(logits)}, batch, 0)
  log_p = logits[0] - np.log(np.exp(logits[0]).sum())
  smoothed = 0.9 * np.asarray([0.25, 0.75, 0.0]) + 0.1 / 3
  assert float(loss) == pytest.approx(-(smoothed * log_p).sum(), rel=1e-6)


def test_a_clip_gets_one_box_for_all_frames_and_its_target_matches():
  # Example 0 is black, example 1 white, so example 0's mixed frames show the box.
  frames = np.zeros((2, 3, 8, 8, 1), np.uint8)
  frames[1] = 255
  batch = {"frames": jnp.asarray(frames), "label": jnp.asarray([1, 4]),
           "mask": jnp.asarray([True, True])}
  mixer = mix.make_mixer(_input_config(cutmix_alpha=1.0), num_classes=7, seed=3)
  seen_boxes = set()
  for step in range(4):
    out = jax.jit(mixer)(batch, jnp.int32(step))
    inside = np.asarray(out["frames"][0, ..., 0]) / 255.0          # [T, H, W], 1 in the box
    for t in range(1, 3):
      np.testing.assert_array_equal(inside[t], inside[0])
    np.testing.assert_array_equal(np.asarray(out["frames"][1, ..., 0]) / 255.0, 1 - inside)
    lam = 1.0 - inside[0].mean()
    target = np.zeros((2, 7))
    target[0, 1], target[0, 4] = lam, 1 - lam
    target[1, 4], target[1, 1] = lam, 1 - lam
    np.testing.assert_allclose(out["soft_target"], target, atol=1e-6)
    seen_boxes.add(inside[0].tobytes())
    # The same (seed, step) mixes the same way (resume is exact).
    again = jax.jit(mixer)(batch, jnp.int32(step))
    np.testing.assert_array_equal(again["frames"], out["frames"])
  assert len(seen_boxes) > 1


def test_switch_and_apply_probabilities():
  # Example 0 black, example 1 white: example 0's mixed image shows what was drawn.
  images = jnp.asarray(np.stack([np.zeros((16, 16, 3)), np.full((16, 16, 3), 255.0)]))
  batch = {"image": images, "label": jnp.asarray([0, 1]), "mask": jnp.asarray([True, True])}
  config = _input_config(mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=0.6, mix_switch_prob=0.5)
  mixer = mix.make_mixer(config, num_classes=2, seed=0)
  drawn = jax.jit(jax.vmap(lambda s: mixer(batch, s)["image"][0, ..., 0]))(jnp.arange(400))
  flat = np.asarray(drawn).reshape(400, -1)
  unmixed = np.all(flat == 0, axis=1)                        # also an empty CutMix box (rare)
  mixup = np.all(flat == flat[:, :1], axis=1) & ~unmixed     # one blend everywhere
  cutmix = ~unmixed & ~mixup
  # P(unmixed) = 0.4, P(Mixup) = P(CutMix) = 0.6 x 0.5; +-4 sigma.
  assert 0.3 < unmixed.mean() < 0.5 and 0.2 < mixup.mean() < 0.4 and 0.2 < cutmix.mean() < 0.4
  assert mix.make_mixer(_input_config(), num_classes=2, seed=0) is None


def test_objectives_that_need_hard_labels_refuse_mixing():
  class HardLabels:
    needs_hard_labels = True

  with pytest.raises(errors.UserError, match="'hard'.*cutmix_alpha|cutmix_alpha.*'hard'"):
    mix.check_config(_input_config(cutmix_alpha=1.0), HardLabels(), "hard")
  mix.check_config(_input_config(), HardLabels(), "hard")
  mix.check_config(_input_config(mixup_alpha=0.2), cross_entropy.CrossEntropy(7), "ce")
  with pytest.raises(errors.UserError, match="mix_switch_prob"):
    mix.check_config(_input_config(mixup_alpha=0.2, mix_switch_prob=1.5),
                     cross_entropy.CrossEntropy(7), "ce")


@pytest.mark.parametrize("objective", [soft_label_mining.SoftLabelMining,
                                       center_cosine.CenterCosine])
def test_objectives_on_hard_labels_refuse_mixup_in_one_line(objective):
  """SLM's label table and the class centers need one class per example."""
  settings = _input_config(mixup_alpha=0.2)
  with pytest.raises(errors.UserError) as caught:
    mix.check_config(settings, objective, "name_in_config")
  assert "\n" not in str(caught.value)
  assert "'name_in_config'" in str(caught.value) and "mixup_alpha" in str(caught.value)
  mix.check_config(_input_config(), objective, "name_in_config")  # Mixing off: accepted.
