"""Temporal channel excitation (TCE), LSTPNet's ECA extended over time.

For the frames of a clip, `x` `[B, T, H, W, C]` (passed flattened as
`[B*T, H, W, C]` with the T frames of a clip contiguous), TCE computes a
per-frame channel gate from the pooled descriptors a = GAP(x), m = GMP(x)
`[B, T, C]`; both branches share three convs (docs/methods/lstpnet.md, 'Model'):

  z1[b,t,c,r]  = sum_j W1[r,j] s[b,t,c+j-p] + b1[r]         (conv over channels, 1 -> rd)
  z2[b,t,c',r] = sum_d sum_c Wt[c',c,d+1] z1[b,t+d,c,r]     (dense conv over time, no bias)
  z3           = ReLU(z2)
  z4[b,t,c]    = sum_r sum_j W2[r,j] z3[b,t,c+j-p,r] + b2    (conv over channels, rd -> 1)
  out          = x * 2 sigmoid(z4(a) + z4(m))                (broadcast over H, W)

with zero padding on the channel and time axes. Time only mixes frames of the
same clip. PyTorch names: `eca_conv_1.0` = `channel_conv1`,
`action_p2_conv1` = `temporal_conv`, `eca_conv_2.0` = `channel_conv2`.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from ferjax.models import precision
from ferjax.models.torch_layers import conv1d


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
  """ECA's adaptive kernel: t = int(|log2 C + beta| / gamma), made odd, at least 3."""
  t = int(abs(math.log2(channels) + beta) / gamma)
  return max(t if t % 2 else t + 1, 3)


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
  """Nearest multiple of `divisor` (>= divisor), never more than 10% below `value`."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < round_limit * value else rounded


class TemporalChannelExcitation(nnx.Module):
  """TCE gate for clips of `num_frames` frames with `channels` channels.

  Attributes:
    kernel_size: k of the two channel-axis convs (3 for C=64, 5 for C=128..512).
    reduced: rd = make_divisible(C / 8, 8), the features of the channel convs.
  """

  def __init__(self, channels: int, num_frames: int, *, dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    self.channels = channels
    self.num_frames = num_frames
    self.kernel_size = eca_kernel_size(channels)
    self.reduced = make_divisible(channels / 8, 8)
    self.channel_conv1 = conv1d(1, self.reduced, self.kernel_size, dtype=dtype, rngs=rngs)
    self.temporal_conv = conv1d(channels, channels, 3, use_bias=False, dtype=dtype, rngs=rngs)
    self.channel_conv2 = conv1d(self.reduced, 1, self.kernel_size, dtype=dtype, rngs=rngs)

  def logits(self, pooled: jax.Array) -> jax.Array:
    """z4 above for pooled descriptors `[N, T, C]` -> `[N, T, C]`.

    The channel conv (1 -> rd) and the time conv act on different axes and are
    linear, so they commute: z2 = sum_j W1[:, j] TC(shift_j s) + b1 TC(1), with
    shift_j s[.., c] = s[.., c+j-p] (zero padded) and TC(1) the time conv of an
    all-ones clip (its end frames see the zero padding). That is k time convs
    instead of rd (5 instead of 64 at C=512), equal up to float rounding.
    """
    n, t, c = pooled.shape
    k, pad = self.kernel_size, (self.kernel_size - 1) // 2
    padded = jnp.pad(pooled, ((0, 0), (0, 0), (pad, pad)))
    shifted = jnp.stack([padded[..., j:j + c] for j in range(k)], axis=1)    # [N, k, T, C]
    timed = self.temporal_conv(shifted.reshape(n * k, t, c)).reshape(n, k, t, c)
    ones = jnp.ones((1, t, c), pooled.dtype)

    def channel_conv(timed, params):                                        # z2 [N, T, C, rd]
      w1, b1, time_kernel = params
      # TC(1) `[T, C]`: temporal_conv's convolution of an all-ones clip.
      time_ones = lax.conv_general_dilated(ones.astype(time_kernel.dtype), time_kernel, (1,),
                                           self.temporal_conv.padding,
                                           dimension_numbers=("NWC", "WIO", "NWC"))[0]
      return jnp.einsum("nktc,kr->ntcr", timed, w1) + time_ones[:, :, None] * b1

    # Parameters used by hand (channel_conv1's; temporal_conv's in TC(1), which is broadcast
    # over the batch) take ferjax.models.precision's float32 gradients where chosen.
    params = (self.channel_conv1.kernel[...][:, 0, :],   # [k, rd]
              self.channel_conv1.bias[...],                # [rd]
              self.temporal_conv.kernel[...])              # [3, C, C]
    if self.channel_conv1.mixed:
      z2 = precision.apply_mixed(channel_conv, timed, params)
    else:
      z2 = channel_conv(timed, tuple(p.astype(pooled.dtype) for p in params))
    z4 = self.channel_conv2(nnx.relu(z2).reshape(n * t, c, self.reduced))    # [N*T, C, 1]
    return z4.reshape(n, t, c)

  def gate(self, x: jax.Array) -> jax.Array:
    """y = 2 sigmoid(z4(GAP x) + z4(GMP x)) `[B, T, C]` for clips `[B, T, H, W, C]`."""
    batch = x.shape[0]
    pooled = jnp.concatenate([jnp.mean(x, axis=(2, 3)), jnp.max(x, axis=(2, 3))])
    z = self.logits(pooled)
    return 2.0 * nnx.sigmoid(z[:batch] + z[batch:])

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Gates frames `[B*T, H, W, C]` (T = num_frames contiguous per clip); same shape out."""
    del train  # TCE has no train-time behaviour; the argument is the ResNet hook's.
    frames, height, width, channels = x.shape
    if channels != self.channels:
      raise ValueError(f"TCE built for {self.channels} channels got input {x.shape}")
    if frames % self.num_frames:
      raise ValueError(f"TCE input has {frames} frames, not a multiple of num_frames="
                       f"{self.num_frames} (model.num_frames must equal input.num_frames)")
    clips = x.reshape(frames // self.num_frames, self.num_frames, height, width, channels)
    gated = clips * self.gate(clips)[:, :, None, None, :].astype(x.dtype)
    return gated.reshape(x.shape)
