"""Average expression anchoring: init, batch mean, eval modes, feature mean."""

import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from ferjax.evaluators import aea as aea_evaluator, registry as evaluator_registry
from ferjax.models import aea
from ferjax.models import registry, resnet


class TinyBackbone(nnx.Module):
  """x [B, 3] -> features [B, 4] (and logits the wrapper must replace)."""

  num_features = 4

  def __init__(self, rngs: nnx.Rngs):
    self.proj = nnx.Linear(3, 4, rngs=rngs)

  def __call__(self, x, *, train):
    del train
    features = jnp.tanh(self.proj(x))
    return {"features": features, "logits": features[:, :2]}


def _classifier(eval_mode="code_faithful"):
  return aea.AEAClassifier(TinyBackbone(nnx.Rngs(0)), 7, eval_mode=eval_mode, rngs=nnx.Rngs(1))


def test_weight_initialises_to_ones_and_mean_is_not_a_param():
  layer = aea.AverageExpressionAnchoring(6)
  np.testing.assert_array_equal(layer.weight[...], np.ones(6))
  assert isinstance(layer.weight, nnx.Param)
  assert isinstance(layer.mean, aea.FeatureMean)
  assert jax.tree.leaves(nnx.state(layer, nnx.Param)) == [layer.weight[...]]


def test_anchor_is_masked_batch_mean():
  rng = np.random.default_rng(0)
  layer = aea.AverageExpressionAnchoring(5)
  layer.weight[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
  x = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
  mask = jnp.array([1, 1, 1, 1, 0, 0], bool)
  h = layer(x, train=True, mask=mask)
  expected = np.asarray(x) + np.asarray(layer.weight[...]) * np.asarray(x)[:4].mean(axis=0)
  np.testing.assert_allclose(h[:4], expected[:4], rtol=1e-6)
  # Padded rows do not move the anchor of the real ones.
  h_other = layer(x.at[4:].set(100.0), train=True, mask=mask)
  np.testing.assert_allclose(h_other[:4], h[:4], rtol=1e-6)


def test_single_sample_is_one_plus_w_times_x():
  layer = aea.AverageExpressionAnchoring(3)
  layer.weight[...] = jnp.array([0.5, -2.0, 1.0])
  x = jnp.array([[1.0, 2.0, 3.0]])
  expected = np.array([[1.5, -2.0, 6.0]])
  np.testing.assert_allclose(layer(x, train=True), expected, rtol=1e-6)
  np.testing.assert_allclose(layer(x, train=False), expected, rtol=1e-6)


def test_gradient_flows_through_the_batch_mean():
  layer = aea.AverageExpressionAnchoring(2)
  layer.weight[...] = jnp.array([0.5, 3.0])
  mask = jnp.array([1, 1, 1, 0], bool)
  x = jnp.arange(8.0).reshape(4, 2)
  # d h[0, j] / d x[b, k] = [j == k] ([b == 0] + w_j [mask_b] / 3).
  jac = jax.jacobian(lambda x: layer(x, train=True, mask=mask)[0])(x)
  np.testing.assert_allclose(jac[0, :, 0], [1 + 0.5 / 3, 0.5 / 3, 0.5 / 3, 0.0], rtol=1e-6)
  np.testing.assert_allclose(jac[1, :, 1], [1 + 3.0 / 3, 3.0 / 3, 3.0 / 3, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(jac[0, :, 1], 0.0)
  # The gradient w.r.t. w is the anchor itself, summed over what depends on it.
  grad_w = jax.grad(lambda w: jnp.sum(x + w * aea.masked_batch_mean(x, mask)))(layer.weight[...])
  np.testing.assert_allclose(grad_w, 4 * np.asarray(x)[:3].mean(axis=0), rtol=1e-6)


def test_cross_sample_dependence_only_in_batch_modes():
  rng = np.random.default_rng(1)
  model = _classifier()
  x = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  x_changed = x.at[2].set(5.0)
  for train in (True, False):
    changed = model(x_changed, train=train)["logits"][0]
    assert np.abs(np.asarray(changed - model(x, train=train)["logits"][0])).max() > 1e-4
  model.set_fixed_mean(rng.normal(size=4))
  model.set_eval_mode("fixed_mean")
  assert model.aea.eval_mode == "batch_independent"
  np.testing.assert_array_equal(model(x_changed, train=False)["logits"][0],
                                model(x, train=False)["logits"][0])
  # Training always anchors on the batch.
  changed = model(x_changed, train=True)["logits"][0]
  assert np.abs(np.asarray(changed - model(x, train=True)["logits"][0])).max() > 1e-4


def test_fixed_mean_mode_uses_stored_mean():
  model = _classifier()
  mu = np.array([0.1, -0.2, 0.3, 0.4], np.float32)
  model.set_fixed_mean(mu)
  model.set_eval_mode("batch_independent")
  x = jnp.ones((2, 3))
  outputs = model(x, train=False)
  pooled = np.asarray(outputs["backbone_features"])
  np.testing.assert_allclose(outputs["features"], pooled + mu, rtol=1e-6)
  expected_logits = (pooled + mu) @ np.asarray(model.fc.kernel[...]) + np.asarray(model.fc.bias[...])
  np.testing.assert_allclose(outputs["logits"], expected_logits, rtol=1e-5, atol=1e-6)


def test_eval_mode_errors():
  model = _classifier()
  with pytest.raises(ValueError, match="set_fixed_mean"):
    model.set_eval_mode("batch_independent")
  with pytest.raises(ValueError, match="eval_mode"):
    model.set_eval_mode("shuffled")
  with pytest.raises(ValueError, match="shape"):
    model.set_fixed_mean(np.zeros(5))
  model.set_fixed_mean(np.ones(4))
  model.set_eval_mode("batch_official")
  assert model.aea.eval_mode == "code_faithful"


def test_aea_evaluator_stores_the_train_mean_in_the_model_state():
  graphdef, state = nnx.split(_classifier("fixed_mean"))
  train_features = np.array([[1, 2, 3, 4], [3, 4, 5, 6], [2, 0, 1, 2]], np.float32)
  calls = []

  def predict(graphdef, model_state, split, keys=()):
    calls.append((nnx.merge(graphdef, model_state).aea.eval_mode, split, tuple(keys)))
    return {"backbone_features": train_features}

  context = evaluator_registry.EvalContext(
      step=1, final=False, is_writer=False, workdir="", dataset_name="d",
      class_names=("a", "b"), eval_split_name="test", eval_split=None, train_split="TRAIN",
      graphdef=graphdef, model_state=state, predict=predict)
  new_graphdef, new_state = aea_evaluator.from_config(ml_collections.ConfigDict()).prepare(
      context)
  assert calls == [("code_faithful", "TRAIN", ("backbone_features",))]
  model = nnx.merge(new_graphdef, new_state)
  assert model.aea.eval_mode == "batch_independent"        # the configured mode
  np.testing.assert_allclose(model.aea.mean[...], [2.0, 2.0, 3.0, 4.0])
  assert "mean" not in nnx.state(model, nnx.Param)["aea"]  # saved with the model, not trained


def _abstract_outputs(model, image_size=32):
  graphdef, state = nnx.split(model)
  return jax.eval_shape(
      lambda state, x: nnx.merge(graphdef, state)(x, train=True, mask=jnp.ones(2, bool)),
      state, jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32))


def test_wraps_resnet18_with_a_fresh_classifier():
  model = nnx.eval_shape(lambda: aea.AEAClassifier(resnet.ResNet(18, None, rngs=nnx.Rngs(0)),
                                                   7, rngs=nnx.Rngs(1)))
  outputs = _abstract_outputs(model)
  assert outputs["logits"].shape == (2, 7)
  assert outputs["features"].shape == outputs["backbone_features"].shape == (2, 512)
  assert model.backbone.fc is None
  count = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  # torchvision resnet18 without fc (11,176,512) + w (512) + Linear(512, 7).
  assert count == 11_176_512 + 512 + 512 * 7 + 7


@pytest.mark.parametrize("config_module,arg,feature_dim", [
    ("stse_resnet50", "synthetic", 512), ("msfe", "synthetic", 512),
    ("resnet", "synthetic,depth=50", 2048)])
def test_wraps_every_image_backbone_from_config(config_module, arg, feature_dim):
  config = importlib.import_module(f"configs.{config_module}").get_config(arg)
  config.model.aea = ml_collections.ConfigDict({"enabled": True, "eval_mode": "fixed_mean"})
  module = importlib.import_module(registry.MODEL_MODULES[config.model.name])

  def build():
    backbone = module.from_config(config.model, 7, headless=True, rngs=nnx.Rngs(0))
    return aea.wrap_from_config(backbone, config.model, 7, rngs=nnx.Rngs(1))
  model = nnx.eval_shape(build)
  assert model.aea.eval_mode == "batch_independent"
  assert model.backbone.fc is None    # no dead classifier computed under AEA's own
  outputs = _abstract_outputs(model, config.input.image_size)
  assert outputs["logits"].shape == (2, 7)
  assert outputs["backbone_features"].shape == (2, feature_dim)


def test_backbone_without_known_width_needs_feature_dim():
  class Bare(nnx.Module):
    def __call__(self, x, *, train):
      return {"features": x}
  with pytest.raises(ValueError, match="feature_dim"):
    aea.AEAClassifier(Bare(), 7, rngs=nnx.Rngs(0))
  model = aea.AEAClassifier(Bare(), 7, feature_dim=3, rngs=nnx.Rngs(0))
  assert model(jnp.ones((1, 3)), train=True)["logits"].shape == (1, 7)
