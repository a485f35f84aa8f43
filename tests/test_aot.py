"""ferjax.scaling compiles the real train step for a 4-chip TPU slice on this CPU host."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import resnet as resnet_config
from ferjax import scaling, sharding
from ferjax.models import precision, resnet
from ferjax.models.tce import TemporalChannelExcitation

IMAGE, PER_DEVICE, CLASSES = 64, 4, 7


def _valid_taps(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
  """(output size, kernel taps inside the unpadded input summed over the outputs), 1-D."""
  out = (size + 2 * pad - kernel) // stride + 1
  taps = sum(1 for y in range(out) for i in range(kernel) if 0 <= stride * y + i - pad < size)
  return out, taps


def _resnet18_forward_flops(batch: int) -> tuple[int, int]:
  """Multiply-add FLOPs (2 per MAC, padding taps excluded) of ResNet-18's convolutions and
  classifier on [batch, IMAGE, IMAGE, 3], and its convolution kernel parameter count."""
  flops, params = 0, 0

  def conv(size, cin, cout, kernel, stride):
    nonlocal flops, params
    out, taps = _valid_taps(size, kernel, stride, kernel // 2)
    flops += 2 * batch * taps * taps * cin * cout
    params += kernel * kernel * cin * cout
    return out

  size = conv(IMAGE, 3, 64, 7, 2)
  size = (size + 2 - 3) // 2 + 1                       # 3x3/2 max pool, padding 1
  cin = 64
  for width, stride in zip(resnet.STAGE_WIDTHS, (1, 2, 2, 2)):
    for block in range(2):
      s = stride if block == 0 else 1
      if s != 1 or cin != width:
        conv(size, cin, width, 1, s)                   # downsample shortcut
      out = conv(size, cin, width, 3, s)
      size = conv(out, width, width, 3, 1)
      cin = width
  flops += 2 * batch * 512 * CLASSES
  return flops, params


@pytest.fixture(scope="module")
def report():
  config = resnet_config.get_config("synthetic")
  config.input.image_size = IMAGE
  config.model.dtype = "bfloat16"                       # float32 gradients: the default
  target = scaling.make_target("v5e:2x2")               # 4 chips, libtpu from the `test` extra
  config.batch_size = PER_DEVICE * len(target.devices)
  mesh = jax.sharding.Mesh(np.asarray(target.devices), (sharding.DATA_AXIS,))
  train_step, _, state = scaling.build_steps(config, mesh, num_train=100)
  batch = scaling.abstract_batch(config, config.batch_size, sharding.batch_sharding(mesh))
  return scaling.compile_step(train_step, (state, batch), list(mesh.devices.flat)), target


def test_fits(report):
  compiled, target = report
  memory = compiled["memory"]
  assert 0 < memory["total"] < 0.9 * target.peak.hbm_bytes
  assert memory["alias"] > 0                           # the donated state is updated in place


def test_flops_match_the_analytic_count(report):
  compiled, _ = report
  forward, _ = _resnet18_forward_flops(PER_DEVICE)
  assert compiled["cost"]["model_flops"] == pytest.approx(3 * forward, rel=0.1)
  # The TPU program computes at least that (its layouts pad small maps and channels).
  assert compiled["cost"]["flops"] >= 0.95 * compiled["cost"]["model_flops"]


def test_one_float32_gradient_all_reduce_over_the_data_axis(report):
  # A bfloat16 model: its parameter gradients are all-reduced in float32.
  compiled, _ = report
  _, conv_params = _resnet18_forward_flops(1)
  gradients = [c for c in compiled["collectives"] if c["elements"] > scaling.LARGE_ELEMENTS]
  assert len(gradients) == 1
  (gradient,) = gradients
  assert gradient["kind"] == "all-reduce" and gradient["dtypes"] == ["f32"]
  assert (gradient["group_size"], gradient["num_groups"]) == (4, 1)
  # Every kernel's gradient; at most the BatchNorm and classifier parameters besides.
  assert conv_params <= gradient["elements"] <= conv_params + 2 * 4800 + 512 * CLASSES + CLASSES
  assert {c["kind"] for c in compiled["collectives"]} == {"all-reduce"}   # state replicated
  # Nor is any smaller one (BatchNorm's scale and bias; s32: the metrics' counts).
  assert {t for c in compiled["collectives"] for t in c["dtypes"]} == {"f32", "s32"}


class _Layers(nnx.Module):
  """One of each layer of ferjax.models.precision and TCE: frames `[2*T, 4, 4, 3]` -> `[2, 5]`."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = resnet.conv(3, 16, 3, use_bias=True, dtype=jnp.bfloat16, rngs=rngs)
    self.bn = resnet.batch_norm(16, jnp.bfloat16, rngs)
    self.tce = TemporalChannelExcitation(16, 2, dtype=jnp.bfloat16, rngs=rngs)
    self.norm = precision.LayerNorm(16, dtype=jnp.bfloat16, rngs=rngs)
    self.fc = precision.Linear(16, 5, dtype=jnp.bfloat16, rngs=rngs)

  def __call__(self, x):
    y = self.tce(nnx.relu(self.bn(self.conv(x), use_running_average=False)))
    return self.fc(self.norm(jnp.mean(y, axis=(1, 2)).reshape(-1, 2, 16).mean(axis=1)))


@pytest.mark.parametrize("grad_dtype, dtypes", [("float32", {"f32"}), ("compute", {"bf16", "f32"})])
def test_gradient_all_reduce_dtype_of_each_layer(grad_dtype, dtypes):
  target = scaling.make_target("v5e:2x2")
  mesh = jax.sharding.Mesh(np.asarray(target.devices), (sharding.DATA_AXIS,))
  with precision.gradient_dtype(grad_dtype):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: _Layers(nnx.Rngs(0))))

  def grads(state, x):
    loss = lambda model: jnp.sum(model(x).astype(jnp.float32))
    return nnx.grad(loss)(nnx.merge(graphdef, state))

  replicated = sharding.replicated(mesh)
  state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                       state)
  x = jax.ShapeDtypeStruct((16, 4, 4, 3), jnp.bfloat16, sharding=sharding.batch_sharding(mesh))
  compiled = jax.jit(grads, out_shardings=replicated).lower(state, x).compile()
  collectives = scaling.collectives(compiled.as_text(), list(mesh.devices.flat))
  # All-reduces sum gradients and BatchNorm statistics (float32); all-to-alls move frames.
  assert {t for c in collectives if c["kind"] == "all-reduce" for t in c["dtypes"]} == dtypes


def test_replica_group_notations():
  devices = list(range(8))
  np.testing.assert_array_equal(scaling._replica_groups("{{0,2},{1,3}}", 4), [[0, 2], [1, 3]])
  np.testing.assert_array_equal(scaling._replica_groups("[2,4]<=[4,2]T(1,0)", 8),
                                [[0, 2, 4, 6], [1, 3, 5, 7]])
  np.testing.assert_array_equal(
      scaling._replica_groups("mesh['a'=2,'b'=4] {'a'}", len(devices)),
      [[0, 4], [1, 5], [2, 6], [3, 7]])
  np.testing.assert_array_equal(scaling._replica_groups("{}", 3), [[0, 1, 2]])


def test_collectives_parsed_from_hlo_text():
  class Device:
    def __init__(self, i):
      self.process_index, self.slice_index = i // 2, 0   # 2 devices per host

  hlo = ("  %ars = (f32[8]{0}, bf16[4]{0}) all-reduce-start(%a, %b), channel_id=1, "
         "replica_groups={{0,1,2,3}}, use_global_device_ids=true, to_apply=%add\n"
         "  %ard = (f32[8]{0}, bf16[4]{0}) all-reduce-done(%ars)\n"
         "  %ag = f32[16]{0} all-gather(%x), replica_groups=[2,2]<=[4], dimensions={0}\n")
  reduce, gather = scaling.collectives(hlo, [Device(i) for i in range(4)])
  assert (reduce["kind"], reduce["elements"], reduce["bytes"]) == ("all-reduce", 12, 8 * 4 + 4 * 2)
  assert (reduce["group_size"], reduce["hosts_per_group"]) == (4, 2)
  assert (gather["num_groups"], gather["group_size"], gather["hosts_per_group"]) == (2, 2, 1)


def test_largest_fitting_batch():
  # Affine memory 100 + 30 b under 1,000: b = 30 is the largest (1,000), 31 needs 1,030.
  # From 4 (220) the line through the origin reaches 1,000 at 4 * 1000 / 220 = 18.2; from
  # 4 and 18 (640) the secant reaches it at 18 + (1000 - 640) / 30 = 30; 31 closes it.
  calls = []
  memory = lambda b: calls.append(b) or 100 + 30 * b
  assert scaling.largest_fitting(memory, 4, 1000)[0] == 30
  assert calls == [4, 18, 30, 31]
  # A start just under the limit: 28 (940) -> 29 (the origin line), then 30 and 31.
  calls.clear()
  assert scaling.largest_fitting(memory, 28, 1000)[0] == 30
  assert calls == [28, 29, 30, 31]
  # From above: 64 does not fit; 32 (1,060) neither; the secant gives 30.
  assert scaling.largest_fitting(lambda b: 100 + 30 * b, 64, 1000)[0] == 30
  # Memory padded to multiples of 8 examples: 24 (820) fits, 25 is padded to 32 (1,060).
  padded = lambda b: 100 + 30 * 8 * -(-b // 8)
  assert scaling.largest_fitting(padded, 2, 1000)[0] == 24
  # The compiler refuses batches from 25 on (None): bisection finds 24.
  refused = lambda b: 100 + 30 * b if b < 25 else None
  batch, trials = scaling.largest_fitting(refused, 4, 1000)
  assert batch == 24 and trials[25] is None
  assert scaling.largest_fitting(lambda b: 2000 + b, 1, 1000) == (0, {1: 2001})


def test_v4_compiles_for_one_device_per_chip():
  # libtpu's default v4 topology has a device per TensorCore (2 per chip); ferjax asks for
  # megacore, as a real v4 slice runs, so the per-chip peaks apply: 2x2x1 = 4 chips, 1 host.
  target = scaling.make_target("v4:2x2x1")
  assert len(target.devices) == 4 and target.hosts == 1
  assert {d.num_cores for d in target.devices} == {2}
  assert target.peak.hbm_bytes == 32e9
