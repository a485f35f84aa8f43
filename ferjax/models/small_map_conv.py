"""2-D convolution that sidesteps XLA:CPU's slow path on tiny feature maps.

XLA:CPU runs some convolutions whose output is only a few pixels wide one to
two orders of magnitude below its normal rate. Measured on this project's
2-core machine, batch 64 (`docs/benchmarks.md`): a 3x3 conv 512->512 with a
2x2 output takes 403 ms forward and 799 ms with its gradient, while a shifted
matmul computing the same sums takes 4.9 ms and 12.8 ms; the gradient of the
stride-2 3x3 conv 256->512 from 4x4 to 2x2 takes 178 ms against 5.6 ms. A
ResNet's last stage runs at 1/32 of the input, so the 32-64 pixel inputs of
the synthetic configs hit this in every step.

`conv_general_dilated` is a drop-in for `jax.lax.conv_general_dilated` (the
`conv_general_dilated` argument of `nnx.Conv`): for ungrouped, undilated
NHWC/HWIO convolutions with at most `MAX_OUTPUT_PIXELS` output pixels, a
computation lowered for CPU sums `kh * kw` strided slices of the padded
input times the kernel as one matmul; otherwise, and in any computation
lowered for another platform, it calls `lax.conv_general_dilated` unchanged.
The choice is made per lowering platform (`jax.lax.platform_dependent`), not
by the host's default backend, so a TPU or GPU program compiled ahead of time
on a CPU host (ferjax.scaling) never contains the CPU path. Parameters and
results are the same either way (up to float summation order).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

MAX_OUTPUT_PIXELS = 9  # up to 3x3 outputs; at 4x4 the library convolution wins again
# Name scope of the shortcut's ops: HLO metadata shows where it was compiled in.
SHORTCUT_SCOPE = "small_map_conv_shortcut"
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                 out_spec=(0, 3, 1, 2))


def _output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - kernel) // stride + 1


def shifted_matmul_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                        padding: Sequence[tuple[int, int]], **kwargs: Any) -> jax.Array:
  """Cross-correlation `[N, H, W, Cin] * [kh, kw, Cin, Cout] -> [N, Ho, Wo, Cout]`.

  out[n, y, x] = sum_{i, j} pad(x)[n, s*y + i, s*x + j] @ kernel[i, j], computed
  as one `[N*Ho*Wo, kh*kw*Cin] @ [kh*kw*Cin, Cout]` matmul.
  """
  kh, kw = kernel.shape[:2]
  (sh, sw), (ph, pw) = strides, tuple(tuple(p) for p in padding)
  ho = _output_size(x.shape[1], kh, sh, ph)
  wo = _output_size(x.shape[2], kw, sw, pw)
  padded = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
  taps = [padded[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  columns = jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]
  flat_kernel = kernel.reshape(kh * kw * kernel.shape[2], kernel.shape[3])
  return jnp.matmul(columns, flat_kernel,
                    precision=kwargs.get("precision"),
                    preferred_element_type=kwargs.get("preferred_element_type"))


def _shortcut_applies(x: jax.Array, kernel: jax.Array, strides, padding, lhs_dilation,
                      rhs_dilation, dimension_numbers, feature_group_count) -> bool:
  """Whether the convolution has the shape that the CPU shortcut computes."""
  if x.ndim != 4 or feature_group_count != 1:
    return False
  if isinstance(padding, str) or dimension_numbers != _NHWC:
    return False
  if any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))):
    return False
  ho = _output_size(x.shape[1], kernel.shape[0], strides[0], tuple(padding[0]))
  wo = _output_size(x.shape[2], kernel.shape[1], strides[1], tuple(padding[1]))
  return ho * wo <= MAX_OUTPUT_PIXELS


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None, **kwargs: Any) -> jax.Array:
  """`lax.conv_general_dilated`; on CPU, tiny-output convs run as a shifted matmul."""

  def library(x, w):
    return lax.conv_general_dilated(x, w, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    precision=precision, **kwargs)

  if not _shortcut_applies(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                           dimension_numbers, feature_group_count):
    return library(lhs, rhs)

  def shortcut(x, w):
    with jax.named_scope(SHORTCUT_SCOPE):
      return shifted_matmul_conv(x, w, window_strides, padding, precision=precision,
                                 preferred_element_type=kwargs.get("preferred_element_type"))

  # Every branch is traced; XLA only ever sees the one of the platform it compiles for.
  return lax.platform_dependent(lhs, rhs, cpu=shortcut, default=library)
