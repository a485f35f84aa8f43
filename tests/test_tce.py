"""TCE (docs/methods/lstpnet.md, 'Model'): sizes, parameter counts, equations vs NumPy, clip isolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ferjax.models.tce import TemporalChannelExcitation, eca_kernel_size, make_divisible


def _num_params(module: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("channels, kernel, reduced, params", [
    (64, 3, 8, 12_345), (128, 5, 16, 49_329), (256, 5, 32, 196_961), (512, 5, 64, 787_137)])
def test_sizes_and_parameter_counts(channels, kernel, reduced, params):
  assert eca_kernel_size(channels) == kernel
  assert make_divisible(channels / 8, 8) == reduced
  tce = nnx.eval_shape(lambda: TemporalChannelExcitation(channels, 16, rngs=nnx.Rngs(0)))
  assert (tce.kernel_size, tce.reduced) == (kernel, reduced)
  assert _num_params(tce) == params == 2 * reduced * kernel + reduced + 1 + 3 * channels ** 2
  assert tce.channel_conv1.kernel.shape == (kernel, 1, reduced)
  assert tce.temporal_conv.kernel.shape == (3, channels, channels)
  assert tce.temporal_conv.bias is None
  assert tce.channel_conv2.kernel.shape == (kernel, reduced, 1)


def test_make_divisible_rounding():
  assert make_divisible(3.0) == 8        # never below the divisor
  assert make_divisible(20.0) == 24      # (20 + 4) // 8 * 8
  assert make_divisible(19.9) == 24      # 23 // 8 * 8 = 16 < 0.9 * 19.9: one more step
  assert make_divisible(17.0) == 16      # 16 >= 15.3: kept


def _numpy_reference(x, w1, b1, wt, w2, b2):
  """The TCE convs with explicit loops; torch layouts W1[r,j], Wt[c',c,δ+1], W2[r,j]."""
  batch, frames, _, _, channels = x.shape
  reduced, k = w1.shape
  p = (k - 1) // 2

  def z4(s):
    z1 = np.zeros((batch, frames, channels, reduced))
    for c in range(channels):
      for j in range(k):
        if 0 <= c + j - p < channels:
          z1[:, :, c, :] += s[:, :, c + j - p, None] * w1[None, None, :, j]
    z1 += b1
    z2 = np.zeros_like(z1)
    for t in range(frames):
      for delta in (-1, 0, 1):
        if 0 <= t + delta < frames:
          z2[:, t] += np.einsum("oc,bcr->bor", wt[:, :, delta + 1], z1[:, t + delta])
    z3 = np.maximum(z2, 0.0)
    out = np.full((batch, frames, channels), b2[0])
    for c in range(channels):
      for j in range(k):
        if 0 <= c + j - p < channels:
          out[:, :, c] += z3[:, :, c + j - p, :] @ w2[:, j]
    return out

  a, m = x.mean(axis=(2, 3)), x.max(axis=(2, 3))
  gate = 2.0 / (1.0 + np.exp(-(z4(a) + z4(m))))
  return x * gate[:, :, None, None, :]


FRAMES, CHANNELS = 4, 16


@pytest.fixture(scope="module")
def tce():
  """A TCE(16) for 4-frame clips with N(0, 0.5^2) parameters, so the gate is far from 1."""
  # Abstract init + NumPy values: no initialiser has to be compiled.
  module = nnx.eval_shape(lambda: TemporalChannelExcitation(CHANNELS, FRAMES, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(1)
  state = nnx.state(module, nnx.Param)
  nnx.update(module, jax.tree.map(lambda p: jnp.asarray(0.5 * rng.normal(size=p.shape), p.dtype),
                                  state))
  return module


def _frames(seed, clips):
  return np.random.default_rng(seed).normal(size=(clips * FRAMES, 3, 3, CHANNELS)).astype(np.float32)


def test_matches_numpy_reference(tce):
  x = _frames(2, 2)
  out = tce(jnp.asarray(x), train=True)
  w1 = np.asarray(tce.channel_conv1.kernel[...])[:, 0, :].T          # (k, 1, rd) -> [rd, k]
  wt = np.asarray(tce.temporal_conv.kernel[...]).transpose(2, 1, 0)   # (3, C, C') -> [C', C, 3]
  w2 = np.asarray(tce.channel_conv2.kernel[...])[:, :, 0].T          # (k, rd, 1) -> [rd, k]
  clips = x.reshape(2, FRAMES, 3, 3, CHANNELS).astype(np.float64)
  expected = _numpy_reference(clips, w1, np.asarray(tce.channel_conv1.bias[...]), wt, w2,
                              np.asarray(tce.channel_conv2.bias[...]))
  assert (expected / clips).std() > 0.1  # the check is not vacuous: the gate varies
  np.testing.assert_allclose(np.asarray(out).reshape(clips.shape), expected, rtol=2e-5, atol=2e-5)


def test_zero_logits_give_identity(tce):
  zeroed = nnx.clone(tce)
  zeroed.channel_conv2.kernel[...] = jnp.zeros_like(zeroed.channel_conv2.kernel[...])
  zeroed.channel_conv2.bias[...] = jnp.zeros_like(zeroed.channel_conv2.bias[...])
  x = _frames(5, 2)
  np.testing.assert_array_equal(np.asarray(zeroed(jnp.asarray(x))), x)  # 2 sigmoid(0) = 1


def test_no_mixing_across_clips_but_mixing_across_frames(tce):
  x = _frames(4, 3)
  changed = x.copy()
  changed[FRAMES:2 * FRAMES] += 1.0                 # perturb every frame of clip 1
  out, out_changed = np.asarray(tce(jnp.asarray(x))), np.asarray(tce(jnp.asarray(changed)))
  for clip in (0, 2):
    rows = slice(clip * FRAMES, (clip + 1) * FRAMES)
    np.testing.assert_array_equal(out[rows], out_changed[rows])
  assert not np.allclose(out[FRAMES:2 * FRAMES], out_changed[FRAMES:2 * FRAMES])
  # Perturbing frame 0 of clip 0 changes the gate of its neighbour frame 1.
  neighbour = x.copy()
  neighbour[0] *= 3.0
  assert not np.allclose(np.asarray(tce(jnp.asarray(neighbour)))[1], out[1])


def test_rejects_bad_frame_count(tce):
  with pytest.raises(ValueError, match="num_frames"):
    tce(jnp.ones((6, 2, 2, 16)))
