"""Soft label mining: table init, closed-form update, ramps, lr schedule, state."""

import csv
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from ferjax import optim
from ferjax.objectives import registry as objective_registry
from ferjax.objectives import soft_label_mining as slm

N_S = 171  # RAF-DB: ceil(12271 / 72)


def _objective(labels, num_classes=7, steps_per_epoch=N_S, **kwargs):
  return slm.SoftLabelMining(np.asarray(labels), num_classes,
                             steps_per_epoch=steps_per_epoch, **kwargs)


def _batch(index, label, mask):
  return {"index": jnp.asarray(index, jnp.int32), "label": jnp.asarray(label, jnp.int32),
          "mask": jnp.asarray(mask, bool)}


def _reference_update(z, logits, labels, mask, u, d, lam=200.0):
  """z - lam * grad_z L_lab, with L_lab written independently of the module."""
  def label_loss(z):
    onehot = jax.nn.one_hot(labels, z.shape[-1])
    p = jax.nn.softmax(logits)
    per_row = (u * optax.softmax_cross_entropy(z, p)
               + d * optax.softmax_cross_entropy(z, onehot))
    return jnp.sum(per_row * mask) / jnp.sum(mask)
  return z - lam * jax.grad(label_loss)(z)


@pytest.mark.parametrize("num_classes,off", [(7, -0.26785816), (8, -0.42200884)])
def test_initial_table(num_classes, off):
  labels = np.array([0, 3, num_classes - 1, 3])
  table = slm.initial_label_logits(labels, num_classes)
  assert table.dtype == np.float32
  for row, y in zip(table, labels):
    np.testing.assert_allclose(row[y], 5.0)
    np.testing.assert_allclose(np.delete(row, y), off, atol=1e-7)
  soft = jax.nn.softmax(table)
  expected = np.full(num_classes, 0.03 / (num_classes - 1))
  expected[labels[1]] = 0.97
  np.testing.assert_allclose(soft[1], expected, atol=1e-6)
  if num_classes == 7:
    np.testing.assert_allclose(table.sum(axis=1), 3.39285105, atol=1e-6)


def test_initial_table_rejects_bad_labels():
  with pytest.raises(ValueError, match="lie in"):
    slm.initial_label_logits(np.array([0, 7]), 7)


@pytest.mark.parametrize("step", [100, 1197, 1198, 4000])
def test_update_is_gradient_step_on_label_loss(step):
  rng = np.random.default_rng(step)
  num, k = 20, 7
  labels = rng.integers(0, k, num)
  objective = _objective(labels)
  objective.table[...] = objective.table[...] + jnp.asarray(rng.normal(size=(num, k)),
                                                            jnp.float32)
  before = np.asarray(objective.table[...])
  # Six real rows, then two padded rows whose indices collide with a real row
  # (3) and point at a row outside the batch (15).
  index = np.array([3, 7, 0, 12, 19, 5, 3, 15])
  mask = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
  logits = jnp.asarray(rng.normal(size=(8, k)) * 3, jnp.float32)
  batch = _batch(index, labels[index], mask)
  objective.update({"logits": logits}, batch, jnp.asarray(step))

  u = float(slm.ramp_u(step, N_S, 1.6, 7))
  d = float(slm.ramp_d(step, N_S, 1.6, 7))
  expected = _reference_update(jnp.asarray(before[index]), logits, batch["label"],
                               jnp.asarray(mask, jnp.float32), u, d)
  after = np.asarray(objective.table[...])
  np.testing.assert_allclose(after[index[:6]], expected[:6], rtol=1e-5, atol=1e-5)
  untouched = np.setdiff1d(np.arange(num), index[:6])
  np.testing.assert_array_equal(after[untouched], before[untouched])
  # B_actual = 6: the step is lam/6, not lam/8.
  q = jax.nn.softmax(before[7])
  p = jax.nn.softmax(logits[1])
  manual = before[7] - 200.0 / 6 * (u * (q - p) + d * (q - jax.nn.one_hot(labels[7], k)))
  np.testing.assert_allclose(after[7], manual, rtol=1e-5, atol=1e-5)


def test_row_sums_invariant_under_many_updates():
  rng = np.random.default_rng(0)
  num, k, batch_size = 50, 7, 8
  objective = _objective(rng.integers(0, k, num), steps_per_epoch=math.ceil(num / batch_size))
  update = nnx.jit(lambda obj, logits, batch, step: obj.update({"logits": logits}, batch, step))
  step = 0
  for _ in range(30):
    order = rng.permutation(num)
    for start in range(0, num, batch_size):
      index = np.zeros(batch_size, np.int64)
      chunk = order[start:start + batch_size]
      index[:chunk.size] = chunk
      mask = np.arange(batch_size) < chunk.size
      logits = jnp.asarray(rng.normal(size=(batch_size, k)) * 4, jnp.float32)
      update(objective, logits, _batch(index, rng.integers(0, k, batch_size), mask),
             jnp.asarray(step))
      step += 1
  table = np.asarray(objective.table[...])
  assert np.abs(table - slm.initial_label_logits(np.zeros(num, int), k)).max() > 1.0
  np.testing.assert_allclose(table.sum(axis=1), 3.39285105, atol=2e-4)


def test_ramps_match_reference_table():
  u_table = [0.0773, 0.1196, 0.1778, 0.2535, 0.3472, 0.4564, 0.5759, 0.6977]
  for epoch, u in enumerate(u_table):
    assert float(slm.ramp_u(epoch * N_S, N_S, 1.6, 7)) == pytest.approx(u, abs=5e-5)
    assert float(slm.ramp_d(epoch * N_S, N_S, 1.6, 7)) == 1.0
  d_table = {8: 0.5912, 10: 0.4449, 15: 0.2768, 20: 0.2096, 30: 0.1545, 40: 0.1313}
  for epoch, d in d_table.items():
    assert float(slm.ramp_d(epoch * N_S, N_S, 1.6, 7)) == pytest.approx(d, abs=5e-5)
    assert float(slm.ramp_u(epoch * N_S, N_S, 1.6, 7)) == 1.0


def test_ramp_boundary_is_inclusive():
  steps = jnp.array([1197, 1198])
  u = slm.ramp_u(steps, N_S, 1.6, 7)
  d = slm.ramp_d(steps, N_S, 1.6, 7)
  assert float(u[0]) == pytest.approx(0.6977, abs=5e-5)
  assert float(u[1]) == 1.0
  assert float(d[0]) == 1.0
  assert float(d[1]) == pytest.approx(0.6970, abs=5e-5)


def test_lagged_cosine_schedule():
  schedule = optim.lagged_cosine(1e-3, 1e-6, 40 * N_S)
  assert float(schedule(0)) == pytest.approx(1e-3, rel=1e-6)
  assert float(schedule(1)) == pytest.approx(1e-3, rel=1e-6)
  assert float(schedule(2)) == pytest.approx(9.99999947e-4, rel=1e-6)
  assert float(schedule(3421)) == pytest.approx(5.005e-4, rel=1e-5)
  assert float(schedule(6839)) == pytest.approx(1.00021e-6, rel=1e-4)


def test_step_order_q_before_update_p_from_pre_update_logits():
  """One SGD step of a linear model: L_cls sees Z0, the update sees pre-step logits."""
  rng = np.random.default_rng(1)
  num, k, dim = 6, 7, 5
  labels = rng.integers(0, k, num)
  objective = _objective(labels)
  model = nnx.Linear(dim, k, rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.normal(size=(num, dim)), jnp.float32)
  batch = _batch(np.arange(num), labels, np.ones(num, bool))
  table0 = np.asarray(objective.table[...])
  step = jnp.asarray(5)

  def loss_fn(model):
    outputs = {"logits": model(x)}
    loss, _ = objective(outputs, batch, step)
    return loss, outputs
  (loss, outputs), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  q0 = jax.nn.softmax(table0)
  expected_loss = np.mean(optax.softmax_cross_entropy(outputs["logits"], q0))
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
  optimizer = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
  optimizer.update(model, grads)
  objective.update(jax.lax.stop_gradient(outputs), batch, step)

  u, d = float(slm.ramp_u(5, N_S, 1.6, 7)), float(slm.ramp_d(5, N_S, 1.6, 7))
  mask = jnp.ones(num)
  pre = _reference_update(jnp.asarray(table0), outputs["logits"], labels, mask, u, d)
  post = _reference_update(jnp.asarray(table0), model(x), labels, mask, u, d)
  np.testing.assert_allclose(objective.table[...], pre, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(post) - np.asarray(pre)).max() > 1e-3
  # The next loss reads the updated table.
  loss_after, _ = objective({"logits": outputs["logits"]}, batch, step)
  assert abs(float(loss_after) - float(loss)) > 1e-4


def test_loss_masks_padded_rows_and_keeps_table_fp32():
  labels = np.array([1, 2, 3])
  objective = _objective(labels)
  logits = jnp.asarray(np.random.default_rng(2).normal(size=(4, 7)), jnp.bfloat16)
  batch = _batch([0, 1, 2, 0], [1, 2, 3, 1], [1, 1, 1, 0])
  loss, metrics = objective({"logits": logits}, batch, jnp.asarray(0))
  q = jax.nn.softmax(slm.initial_label_logits(labels, 7))
  ce = optax.softmax_cross_entropy(logits[:3].astype(jnp.float32), q)
  np.testing.assert_allclose(loss, np.mean(ce), rtol=1e-6)
  assert float(metrics["slm_relabelled"]) == 0.0
  objective.update({"logits": logits}, batch, jnp.asarray(0))
  assert objective.table[...].dtype == jnp.float32


def _context(labels, steps_per_epoch=171, ids=None):
  return objective_registry.TrainContext(7, 512, steps_per_epoch, len(labels),
                                         read_labels=lambda: labels, read_ids=ids)


def test_from_config_takes_steps_per_epoch_from_loop_or_config():
  config = ml_collections.ConfigDict(
      {"name": "soft_label_mining", "k": 5.0, "p": 0.97, "lam": 200.0, "alpha": 1.6,
       "beta": 7, "steps_per_epoch": 0})
  labels = np.zeros(100, np.int32)
  objective = objective_registry.build_objective(config, _context(labels), rngs=nnx.Rngs(0))
  assert objective.steps_per_epoch == 171 and objective.lam == 200.0
  assert not objective.export
  config.steps_per_epoch = 170
  assert slm.from_config(config, _context(labels), rngs=nnx.Rngs(0)).steps_per_epoch == 170
  config.steps_per_epoch = 0
  with pytest.raises(ValueError, match="steps_per_epoch"):
    slm.from_config(config, _context(labels, steps_per_epoch=0), rngs=nnx.Rngs(0))


def test_on_train_end_exports_the_table_with_the_context_ids(tmp_path):
  config = ml_collections.ConfigDict(
      {"name": "soft_label_mining", "k": 5.0, "p": 0.97, "lam": 200.0, "alpha": 1.6,
       "beta": 7, "export_soft_labels": True})
  context = _context(np.array([1, -1, 0]), ids=lambda: ["a", "", "c"])
  objective = slm.from_config(config, context, rngs=nnx.Rngs(0))
  objective.on_train_end(str(tmp_path), context)
  data = np.load(tmp_path / "soft_labels.npz")
  np.testing.assert_array_equal(data["id"], ["a", "c"])
  np.testing.assert_array_equal(data["label"], [1, 0])
  np.testing.assert_allclose(data["soft_label"][0, 1], 0.97, atol=1e-6)


def test_filtered_records_get_inert_rows():
  table = slm.initial_label_logits(np.array([2, -1, 0]), 7)
  np.testing.assert_array_equal(table[1], np.zeros(7))
  assert table[0, 2] == 5.0 and table[2, 0] == 5.0


def test_table_restores_bit_for_bit_through_orbax(tmp_path):
  rng = np.random.default_rng(3)
  objective = _objective(rng.integers(0, 7, 30))
  objective.table[...] = objective.table[...] + jnp.asarray(rng.normal(size=(30, 7)) * 1e-3,
                                                            jnp.float32)
  state = nnx.state(objective)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "slm", state)
  checkpointer.wait_until_finished()
  fresh = _objective(np.zeros(30, int))
  _, abstract = nnx.split(nnx.eval_shape(lambda: _objective(np.zeros(30, int))))
  restored = checkpointer.restore(tmp_path / "slm", abstract)
  nnx.update(fresh, restored)
  np.testing.assert_array_equal(fresh.table[...], objective.table[...])


def test_export_soft_labels(tmp_path):
  table = slm.initial_label_logits(np.array([1, 0]), 7)
  table[1, 4] = 9.0
  table = np.concatenate([table, np.zeros((1, 7), np.float32)])
  npz_path, csv_path = slm.export_soft_labels(table, ["a", "b", "filtered"],
                                              np.array([1, 0, -1]),
                                              str(tmp_path / "out" / "soft_labels.npz"))
  data = np.load(npz_path)
  np.testing.assert_array_equal(data["id"], ["a", "b"])
  np.testing.assert_allclose(data["soft_label"][0, 1], 0.97, atol=1e-6)
  np.testing.assert_allclose(data["soft_label"].sum(axis=1), 1.0, atol=1e-6)
  with open(csv_path) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["id", "label", "mined_label", "neutral", "happy", "sad", "surprise",
                     "fear", "disgust", "anger"]
  assert rows[1][:3] == ["a", "happy", "happy"] and float(rows[1][4]) == pytest.approx(0.97)
  assert rows[2][:3] == ["b", "neutral", "fear"] and len(rows) == 3


_SHARDED_STEP = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from flax import nnx
    from ferjax.models import aea
    from ferjax.objectives import soft_label_mining as slm

    class Backbone(nnx.Module):
      num_features = 4
      def __init__(self, rngs):
        self.proj = nnx.Linear(3, 4, rngs=rngs)
      def __call__(self, x, *, train):
        return {"features": jnp.tanh(self.proj(x))}

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 40)
    model = aea.AEAClassifier(Backbone(nnx.Rngs(0)), 7, rngs=nnx.Rngs(1))
    objective = slm.SoftLabelMining(labels, 7, steps_per_epoch=3)
    graphdef, params, rest = nnx.split((model, objective), nnx.Param, ...)
    index = rng.permutation(40)[:16]
    batch = {"image": rng.normal(size=(16, 3)).astype(np.float32), "index": index,
             "label": labels[index], "mask": np.arange(16) < 13}

    def step(params, rest, batch):
      def loss_fn(params):
        model, objective = nnx.merge(graphdef, params, rest, copy=True)
        outputs = model(batch["image"], train=True, mask=batch["mask"])
        return objective(outputs, batch, 5)[0], outputs
      (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      _, objective = nnx.merge(graphdef, params, rest, copy=True)
      objective.update(jax.lax.stop_gradient(outputs), batch, 5)
      return loss, grads, objective.table[...]

    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = jax.make_mesh((len(devices),), ("data",), devices=devices,
                           axis_types=(jax.sharding.AxisType.Auto,))
      sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
      replicated = NamedSharding(mesh, P())
      results.append(jax.device_get(jax.jit(step, out_shardings=replicated)(
          jax.device_put(params, replicated), jax.device_put(rest, replicated), sharded)))
    (loss1, grads1, table1), (loss8, grads8, table8) = results
    assert jax.device_count() == 8
    np.testing.assert_allclose(loss1, loss8, rtol=1e-6)
    for g1, g8 in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads8)):
      np.testing.assert_allclose(g1, g8, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(table1, table8, rtol=1e-6, atol=1e-6)
    assert np.abs(table1 - slm.initial_label_logits(labels, 7)).max() > 1e-3
    print("SHARDED_OK")
""")


def test_step_is_the_same_on_1_and_8_devices():
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_FLAGS"))}
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="8")
  result = subprocess.run([sys.executable, "-c", _SHARDED_STEP], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
  assert "SHARDED_OK" in result.stdout, result.stderr[-3000:]
