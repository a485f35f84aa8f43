"""Center cosine loss (docs/methods/msfe.md) against NumPy references."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import msfe as msfe_config
from ferjax.objectives import center_cosine, registry as objective_registry
from ferjax.objectives.center_cosine import CenterCosine, CenterVariable


def np_cosines(features, centers):
  f = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-8)
  c = centers / np.maximum(np.linalg.norm(centers, axis=-1, keepdims=True), 1e-8)
  return f @ c.T


def np_cross_entropy(logits, labels):
  """Per-row -log softmax(logits)[y], stable."""
  top = logits.max(axis=-1, keepdims=True)
  log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
  return log_z - logits[np.arange(len(labels)), labels]


def make_objective(num_classes, feature_dim, centers=None, **kwargs):
  objective = CenterCosine(num_classes, feature_dim, rngs=nnx.Rngs(0), **kwargs)
  if centers is not None:
    objective.centers.set_value(jnp.asarray(centers, jnp.float32))
  return objective


def random_batch(rng, size, num_classes, feature_dim):
  return {
      "features": rng.normal(size=(size, feature_dim)).astype(np.float32),
      "logits": rng.normal(size=(size, num_classes)).astype(np.float32),
      "label": rng.integers(0, num_classes, size).astype(np.int32),
      "mask": np.ones(size, bool),
  }


def evaluate(objective, batch):
  outputs = {"features": jnp.asarray(batch["features"]), "logits": jnp.asarray(batch["logits"])}
  loss, metrics = objective(outputs, {"label": jnp.asarray(batch["label"]),
                                      "mask": jnp.asarray(batch["mask"])}, 0)
  return float(loss), {k: float(v) for k, v in metrics.items()}


def centers_only(**kwargs):
  """CCL alone (no CE head), so the loss is L_CCL."""
  return dict(use_ce_head=False, predict_with="centers", **kwargs)


def test_margin_zero_is_softmax_ce_on_scaled_cosines():
  rng = np.random.default_rng(0)
  batch = random_batch(rng, 6, 4, 5)
  centers = rng.normal(size=(4, 5))
  objective = make_objective(4, 5, centers, scale=16.0, margin=0.0, **centers_only())
  loss, _ = evaluate(objective, batch)
  expected = np_cross_entropy(16.0 * np_cosines(batch["features"], centers), batch["label"])
  np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)


def test_total_loss_is_ce_plus_weighted_margin_loss_plus_pull():
  rng = np.random.default_rng(1)
  batch = random_batch(rng, 6, 4, 5)
  centers = rng.normal(size=(4, 5))
  objective = make_objective(4, 5, centers, scale=10.0, margin=0.3, weight=0.4,
                             pull_weight=0.25)
  loss, metrics = evaluate(objective, batch)
  cos = np_cosines(batch["features"], centers)
  onehot = np.eye(4)[batch["label"]]
  ccl = np_cross_entropy(10.0 * (cos - 0.3 * onehot), batch["label"]).mean()
  ce = np_cross_entropy(batch["logits"].astype(np.float64), batch["label"]).mean()
  own = cos[np.arange(6), batch["label"]]
  np.testing.assert_allclose(metrics["ccl_loss"], ccl, rtol=1e-5)
  np.testing.assert_allclose(metrics["ce_loss"], ce, rtol=1e-5)
  np.testing.assert_allclose(metrics["own_center_cos"], own.mean(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(loss, ce + 0.4 * ccl + 0.25 * (1 - own).mean(), rtol=1e-5)


def test_margin_loss_is_invariant_to_rescaling_features_and_centers():
  rng = np.random.default_rng(2)
  batch = random_batch(rng, 5, 3, 4)
  centers = rng.normal(size=(3, 4))
  loss, _ = evaluate(make_objective(3, 4, centers, **centers_only()), batch)
  scaled_batch = dict(batch, features=batch["features"] * 3.7)
  scaled_loss, _ = evaluate(make_objective(3, 4, centers * 0.2, **centers_only()), scaled_batch)
  np.testing.assert_allclose(scaled_loss, loss, rtol=1e-6)


@pytest.mark.parametrize("scale,margin", [(30.0, 0.35), (4.0, 0.5), (2.0, 0.0)])
def test_two_classes_orthogonal_centers_closed_form(scale, margin):
  centers = np.array([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
  labels = np.array([0, 1, 1], np.int32)
  batch = {"features": centers[labels].astype(np.float32), "logits": np.zeros((3, 2), np.float32),
           "label": labels, "mask": np.ones(3, bool)}
  objective = make_objective(2, 3, centers, scale=scale, margin=margin, **centers_only())
  loss, _ = evaluate(objective, batch)
  top = np.exp(scale * (1 - margin))
  np.testing.assert_allclose(loss, -np.log(top / (top + 1.0)), rtol=1e-5, atol=1e-7)


def test_intra_inter_variant_matches_numpy():
  rng = np.random.default_rng(3)
  batch = random_batch(rng, 7, 3, 4)
  centers = rng.normal(size=(3, 4))
  objective = make_objective(3, 4, centers, variant="intra_inter", inter_weight=0.5,
                             **centers_only())
  loss, _ = evaluate(objective, batch)
  intra = (1 - np_cosines(batch["features"], centers)[np.arange(7), batch["label"]]).mean()
  gram = np_cosines(centers, centers)
  off = ~np.eye(3, dtype=bool)
  inter = (1 + gram[off]).sum() / 6
  np.testing.assert_allclose(loss, intra + 0.5 * inter, rtol=1e-5)


def loss_of(graphdef, state, features, centers, logits, batch):
  """The objective's loss as a pure function of (features, centers)."""
  objective = nnx.merge(graphdef, state, copy=True)
  objective.centers.set_value(centers)
  return objective({"features": features, "logits": logits}, batch, 0)[0]


@pytest.mark.parametrize("variant", ["margin", "intra_inter"])
def test_gradients_match_finite_differences_in_float64(variant):
  with jax.enable_x64(True):
    rng = np.random.default_rng(4)
    features = rng.normal(size=(4, 3))
    centers = rng.normal(size=(3, 3))
    logits = jnp.asarray(rng.normal(size=(4, 3)))
    batch = {"label": jnp.array([0, 2, 2, 1]), "mask": jnp.array([True, True, True, False])}
    objective = make_objective(3, 3, variant=variant, scale=5.0, margin=0.3, pull_weight=0.2)
    graphdef, state = nnx.split(objective)

    jitted = jax.jit(lambda f, c: loss_of(graphdef, state, f, c, logits, batch))

    def loss(f, c):
      return float(jitted(jnp.asarray(f), jnp.asarray(c)))

    grads = jax.grad(lambda f, c: loss_of(graphdef, state, f, c, logits, batch),
                     argnums=(0, 1))(jnp.asarray(features), jnp.asarray(centers))
    assert grads[0].dtype == jnp.float64 and grads[1].dtype == jnp.float64
    eps = 1e-6
    for which, value in enumerate((features, centers)):
      numeric = np.zeros_like(value)
      for index in np.ndindex(value.shape):
        step = np.zeros_like(value)
        step[index] = eps
        args = [features, centers]
        args[which] = value + step
        up = loss(*args)
        args[which] = value - step
        numeric[index] = (up - loss(*args)) / (2 * eps)
      np.testing.assert_allclose(np.asarray(grads[which]), numeric, rtol=1e-6, atol=1e-9)
    # The padded row gets no gradient.
    np.testing.assert_array_equal(np.asarray(grads[0])[3], 0.0)


def test_ema_update_reproduces_hand_computed_two_class_batch():
  centers = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
  objective = make_objective(3, 2, center_update="ema", ema_rate=0.5)
  objective.centers.set_value(jnp.asarray(centers, jnp.float32))
  features = jnp.array([[0.0, 1.0], [0.0, 2.0], [3.0, 0.0]])
  objective.update({"features": features}, {"label": jnp.array([0, 0, 1]),
                                            "mask": jnp.ones(3, bool)}, 0)
  # Class 0: n=2, delta = 2 (c0 - (0, 1)) / 3 = (2/3, -2/3); c0 - delta/2 = (2/3, 1/3).
  # Class 1: n=1, delta = (c1 - (1, 0)) / 2 = (-1/2, 1/2); c1 - delta/2 = (1/4, 3/4).
  expected = np.array([[2.0, 1.0] / np.sqrt(5.0), [1.0, 3.0] / np.sqrt(10.0), [0.6, 0.8]])
  np.testing.assert_allclose(np.asarray(objective.centers[...]), expected, rtol=1e-6)


def test_ema_update_keeps_unit_norm_and_leaves_absent_classes_unchanged():
  rng = np.random.default_rng(5)
  objective = make_objective(5, 6, center_update="ema")
  before = np.asarray(objective.centers[...])
  np.testing.assert_allclose(np.linalg.norm(before, axis=-1), 1.0, rtol=1e-6)
  batch = {"label": jnp.asarray(rng.integers(0, 3, 12)), "mask": jnp.ones(12, bool)}
  for _ in range(3):
    objective.update({"features": jnp.asarray(rng.normal(size=(12, 6)) * 5)}, batch, 0)
  after = np.asarray(objective.centers[...])
  np.testing.assert_allclose(np.linalg.norm(after, axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(after[3:], before[3:])
  assert np.abs(after[:3] - before[:3]).max() > 1e-2


def test_grad_mode_update_is_a_no_op():
  objective = make_objective(3, 4)
  before = np.asarray(objective.centers[...])
  objective.update({"features": jnp.ones((2, 4))}, {"label": jnp.array([0, 1]),
                                                    "mask": jnp.ones(2, bool)}, 0)
  np.testing.assert_array_equal(np.asarray(objective.centers[...]), before)


@pytest.mark.parametrize("variant", ["margin", "intra_inter"])
def test_loss_has_zero_gradient_wrt_ema_centers(variant):
  rng = np.random.default_rng(6)
  batch = random_batch(rng, 5, 3, 4)
  labels = {"label": jnp.asarray(batch["label"]), "mask": jnp.asarray(batch["mask"])}
  features, logits = jnp.asarray(batch["features"]), jnp.asarray(batch["logits"])
  grads = {}
  for update in ("grad", "ema"):
    objective = make_objective(3, 4, center_update=update, variant=variant)
    graphdef, state = nnx.split(objective)
    grads[update] = jax.grad(lambda c: loss_of(graphdef, state, features, c, logits, labels))(
        objective.centers[...])
  np.testing.assert_array_equal(np.asarray(grads["ema"]), 0.0)
  assert np.abs(np.asarray(grads["grad"])).max() > 1e-4
  # EMA centers are state, not parameters: the optimiser never sees them.
  ema = make_objective(3, 4, center_update="ema")
  assert not jax.tree.leaves(nnx.state(ema, nnx.Param))
  assert isinstance(ema.centers, CenterVariable)
  assert isinstance(make_objective(3, 4).centers, nnx.Param)


@pytest.mark.parametrize("update", ["grad", "ema"])
def test_padded_rows_change_neither_loss_nor_center_update(update):
  rng = np.random.default_rng(7)
  valid = random_batch(rng, 5, 4, 6)
  junk = random_batch(rng, 3, 4, 6)
  padded = {k: np.concatenate([valid[k], junk[k]]) for k in valid}
  padded["mask"] = np.arange(8) < 5
  results = []
  for batch in (valid, padded):
    objective = make_objective(4, 6, center_update=update, variant="margin", pull_weight=0.1)
    loss, metrics = evaluate(objective, batch)
    objective.update({"features": jnp.asarray(batch["features"])},
                     {"label": jnp.asarray(batch["label"]), "mask": jnp.asarray(batch["mask"])}, 0)
    results.append((loss, metrics, np.asarray(objective.centers[...])))
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6)
  for key in results[0][1]:
    np.testing.assert_allclose(results[1][1][key], results[0][1][key], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(results[1][2], results[0][2], rtol=1e-6)


def test_predict_returns_logits_or_center_cosines():
  rng = np.random.default_rng(8)
  batch = random_batch(rng, 4, 3, 5)
  centers = rng.normal(size=(3, 5))
  outputs = {"features": jnp.asarray(batch["features"]), "logits": jnp.asarray(batch["logits"])}
  np.testing.assert_array_equal(np.asarray(make_objective(3, 5, centers).predict(outputs)),
                                batch["logits"])
  scores = make_objective(3, 5, centers, predict_with="centers").predict(outputs)
  np.testing.assert_allclose(np.asarray(scores), np_cosines(batch["features"], centers),
                             rtol=1e-5, atol=1e-6)


def test_from_config_reads_ccl_fields_and_rejects_bad_ones():
  config = msfe_config.get_config("synthetic").objective
  config.ccl.center_update = "ema"
  config.ccl.margin = 0.2
  def context(feature_dim):
    return objective_registry.TrainContext(7, feature_dim, 10, 100,
                                           read_labels=lambda: np.zeros(100, int))
  objective = center_cosine.from_config(config, context(512), rngs=nnx.Rngs(0))
  assert isinstance(objective.centers, CenterVariable)
  assert objective.centers[...].shape == (7, 512)
  assert objective.margin == 0.2 and objective.scale == 30.0 and objective.weight == 0.1
  config.ccl.variant = "arcface"
  with pytest.raises(ValueError, match="objective.ccl.variant"):
    center_cosine.from_config(config, context(8), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="predict_with"):
    CenterCosine(3, 4, use_ce_head=False, rngs=nnx.Rngs(0))


def sharded_step_results(num_devices: int) -> dict:
  """Loss, d loss / d (features, centers) and updated centers of one jitted step.

  The batch (16 rows, 3 padded) is sharded over `num_devices` CPU devices.
  """
  rng = np.random.default_rng(9)
  batch = random_batch(rng, 16, 4, 6)
  batch["mask"] = np.arange(16) < 13
  arrays = {k: jnp.asarray(v) for k, v in batch.items()}
  if num_devices > 1:
    mesh = jax.make_mesh((num_devices,), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.NamedSharding(mesh, jax.P("data"))
    arrays = {k: jax.device_put(v, sharding) for k, v in arrays.items()}
    assert len(arrays["features"].sharding.device_set) == num_devices
  results = {}
  for update in ("grad", "ema"):
    objective = make_objective(4, 6, center_update=update, pull_weight=0.1)
    graphdef, state = nnx.split(objective)

    @jax.jit
    def step(state, arrays):
      labels = {"label": arrays["label"], "mask": arrays["mask"]}
      centers = nnx.merge(graphdef, state).centers[...]
      loss, grads = jax.value_and_grad(
          lambda f, c: loss_of(graphdef, state, f, c, arrays["logits"], labels),
          argnums=(0, 1))(arrays["features"], centers)
      objective = nnx.merge(graphdef, state)
      objective.update({"features": arrays["features"]}, labels, 0)
      return loss, grads, objective.centers[...]

    loss, grads, centers = step(state, arrays)
    results[update] = {"loss": float(loss), "grad_features": np.asarray(grads[0]).tolist(),
                       "grad_centers": np.asarray(grads[1]).tolist(),
                       "centers": np.asarray(centers).tolist()}
  return results


def test_loss_and_center_update_equal_on_one_and_eight_devices():
  tests_dir = pathlib.Path(__file__).resolve().parent
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  script = (f"import sys, json; sys.path[:0] = [{str(tests_dir)!r}, {str(tests_dir.parent)!r}]\n"
            "import jax; assert jax.device_count() == 8, jax.devices()\n"
            "import test_center_cosine as t; print(json.dumps(t.sharded_step_results(8)))")
  run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  sharded = json.loads(run.stdout.strip().splitlines()[-1])
  single = sharded_step_results(1)
  for update in ("grad", "ema"):
    for key, value in single[update].items():
      np.testing.assert_allclose(np.asarray(sharded[update][key]), np.asarray(value),
                                 rtol=1e-5, atol=1e-7, err_msg=f"{update}/{key}")
