"""Frame sampling (docs/methods/lstpnet.md, 'Data protocol'): official test vectors and train-mode ranges."""

import numpy as np
import pytest

from ferjax.data.frame_sampling import keep_clip, segment_indices


def _pairs(offsets):
  return [i for p in offsets for i in (p, p + 1)]


@pytest.mark.parametrize("n, expected", [
    (16, list(range(16))),
    (17, list(range(1, 17))),
    (25, [1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19, 20, 22, 23]),
    (144, _pairs([8, 26, 44, 62, 80, 98, 116, 134])),
    (9, [0, 1] * 8),
    (1, [0] * 16),
])
def test_test_mode_vectors(n, expected):
  indices = segment_indices(n, 8, 2, train=False)
  assert indices.dtype == np.int64
  np.testing.assert_array_equal(indices, expected)


def test_test_mode_ignores_rng_and_is_deterministic():
  a = segment_indices(70, 8, 2, train=False, rng=np.random.default_rng(1))
  np.testing.assert_array_equal(a, segment_indices(70, 8, 2, train=False))


def test_train_n16_has_single_choice():
  # avg = (16 - 1) // 8 = 1, so every random draw is 0: offsets 0..7.
  indices = segment_indices(16, 8, 2, train=True, rng=np.random.default_rng(0))
  np.testing.assert_array_equal(indices, [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8])


def test_train_offsets_stay_in_their_segments():
  rng = np.random.default_rng(0)
  n, avg = 70, (70 - 1) // 8
  seen = set()
  for _ in range(200):
    indices = segment_indices(n, 8, 2, train=True, rng=rng).reshape(8, 2)
    np.testing.assert_array_equal(indices[:, 1], indices[:, 0] + 1)
    offsets = indices[:, 0]
    segment = np.arange(8) * avg
    assert np.all(offsets >= segment) and np.all(offsets < segment + avg)
    seen.update(offsets[:1].tolist())
  assert seen == set(range(avg))  # every start of segment 0 is drawn


def test_train_short_clips_clamp_at_last_frame():
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(segment_indices(8, 8, 2, train=True, rng=rng), _pairs([0] * 8))
  np.testing.assert_array_equal(segment_indices(1, 8, 2, train=True, rng=rng), [0] * 16)
  np.testing.assert_array_equal(segment_indices(5, 8, 3, train=False), [0, 1, 2] * 8)


def test_train_sorted_draw_branch_for_longer_segments():
  # d=3, n=9: L = 7 starts, L // 8 = 0 but n > 8: sorted draws from 0..6.
  rng = np.random.default_rng(3)
  for _ in range(20):
    indices = segment_indices(9, 8, 3, train=True, rng=rng).reshape(8, 3)
    offsets = indices[:, 0]
    assert np.all(np.diff(offsets) >= 0) and offsets.min() >= 0 and offsets.max() <= 6
    np.testing.assert_array_equal(indices, offsets[:, None] + np.arange(3))


def test_bad_arguments():
  with pytest.raises(ValueError, match="rng"):
    segment_indices(16, 8, 2, train=True)
  with pytest.raises(ValueError, match=">= 1"):
    segment_indices(0, 8, 2, train=False)


def test_keep_clip():
  assert keep_clip(16, 16) and keep_clip(17, 16) and not keep_clip(15, 16)
  assert keep_clip(1, 0)
