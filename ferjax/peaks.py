"""Per-device peaks: dense FLOP/s (for MFU and rooflines), HBM size and bandwidth.

Keyed by `jax.Device.device_kind`. FLOP/s columns: `bfloat16` (dense tensor-core
/ MXU rate, no sparsity) and `float32`, the rate at which XLA's *default*
precision runs float32 convolutions and matmuls: TF32 tensor cores on
A100/H100/H200, single-pass bfloat16 on TPUs (JAX's documented defaults; see
docs.jax.dev "Matmul precision"). Figures are the vendors' published dense
peaks per device as JAX sees it (one GPU; one TPU chip). `hbm_bytes` and
`hbm_bandwidth` (bytes/s) are the same spec sheets' memory figures (decimal
GB as printed there); docs/scaling.md names the sheets.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Peak:
  name: str
  bfloat16: float
  float32: float
  hbm_bytes: float
  hbm_bandwidth: float


# (match, exact?, peak). NVIDIA device kinds vary by board ("NVIDIA H100 80GB
# HBM3", "NVIDIA A100-SXM4-40GB"), so they match by substring, most specific
# first; TPU kinds are matched exactly ("TPU v5 lite" must not match v5p).
_TABLE: tuple[tuple[str, bool, Peak], ...] = (
    ("H100 PCIe", False, Peak("H100 PCIe", 756.5e12, 378.0e12, 80e9, 2.0e12)),
    ("H100 NVL", False, Peak("H100 NVL", 835.5e12, 417.5e12, 94e9, 3.9e12)),
    ("H100", False, Peak("H100 SXM", 989.4e12, 494.7e12, 80e9, 3.35e12)),
    ("H200 NVL", False, Peak("H200 NVL", 835.5e12, 417.5e12, 141e9, 4.8e12)),
    ("H200", False, Peak("H200 SXM", 989.4e12, 494.7e12, 141e9, 4.8e12)),
    ("A100-SXM4-80GB", False, Peak("A100 SXM 80GB", 312.0e12, 156.0e12, 80e9, 2.039e12)),
    ("A100 80GB PCIe", False, Peak("A100 PCIe 80GB", 312.0e12, 156.0e12, 80e9, 1.935e12)),
    ("A100", False, Peak("A100 40GB", 312.0e12, 156.0e12, 40e9, 1.555e12)),
    ("TPU v4", True, Peak("TPU v4", 275.0e12, 275.0e12, 32e9, 1.2e12)),
    ("TPU v5 lite", True, Peak("TPU v5e", 197.0e12, 197.0e12, 16e9, 819e9)),
    ("TPU v5e", True, Peak("TPU v5e", 197.0e12, 197.0e12, 16e9, 819e9)),
    ("TPU v5", True, Peak("TPU v5p", 459.0e12, 459.0e12, 95e9, 2.765e12)),
    ("TPU v5p", True, Peak("TPU v5p", 459.0e12, 459.0e12, 95e9, 2.765e12)),
    ("TPU v6 lite", True, Peak("TPU v6e", 918.0e12, 918.0e12, 32e9, 1.64e12)),
    ("TPU v6e", True, Peak("TPU v6e", 918.0e12, 918.0e12, 32e9, 1.64e12)),
)


def lookup(device_kind: str) -> Peak | None:
  """The peak entry for a `device_kind`, or None for unknown devices (CPUs)."""
  for match, exact, peak in _TABLE:
    if (device_kind == match) if exact else (match in device_kind):
      return peak
  return None


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Peak dense FLOP/s of one device for computation dtype 'float32' | 'bfloat16'."""
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
  peak = lookup(device_kind)
  return None if peak is None else getattr(peak, dtype)
