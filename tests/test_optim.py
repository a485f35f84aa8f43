"""Learning-rate schedules and optimizer construction from config."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from ferjax import optim


def _schedule(**fields):
  config = default.get_config()
  config.schedule.update(fields)
  return optim.make_schedule(config.schedule, 0.1, steps_per_epoch=10, num_epochs=4)


def test_step_schedule_decays_every_n_epochs():
  schedule = _schedule(name="step", step_epochs=2, decay_rate=0.1)
  assert float(schedule(19)) == pytest.approx(0.1)
  assert float(schedule(20)) == pytest.approx(0.01)


def test_cosine_with_warmup():
  schedule = _schedule(name="cosine", warmup_epochs=1.0)
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(0.05)
  assert float(schedule(10)) == pytest.approx(0.1)
  assert float(schedule(40)) == pytest.approx(0.0, abs=1e-7)


def test_exponential_per_epoch():
  schedule = _schedule(name="exponential", decay_rate=0.9)
  assert float(schedule(9)) == pytest.approx(0.1)
  assert float(schedule(25)) == pytest.approx(0.1 * 0.81)


def test_unknown_names_are_errors():
  with pytest.raises(ValueError, match="schedule.name"):
    _schedule(name="linear_forever")
  config = default.get_config()
  config.optimizer.name = "lion"
  with pytest.raises(ValueError, match="optimizer.name"):
    optim.make_optimizer(config, lambda _: 0.1, {"w": jnp.ones(2)})


def test_sgd_weight_decay_is_l2_and_skips_excluded_paths():
  config = default.get_config()
  config.optimizer.update(name="sgd", momentum=0.0, weight_decay=0.5, no_decay=("centers",))
  params = {"w": jnp.ones(2), "centers": jnp.ones(2)}
  tx = optim.make_optimizer(config, lambda _: 1.0, params)
  zeros = {"w": jnp.zeros(2), "centers": jnp.zeros(2)}
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.5 * np.ones(2))
  np.testing.assert_allclose(updates["centers"], np.zeros(2))


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_lr_multiplier_scales_only_the_named_parameters(name):
  config = default.get_config()
  config.optimizer.update(name=name, momentum=0.0, weight_decay=0.0)
  config.optimizer.lr_multipliers = ml_collections.ConfigDict({"centers": 3.0})
  params = {"backbone": {"w": jnp.ones(2)}, "objective": {"centers": jnp.ones(2)}}
  grads = {"backbone": {"w": jnp.array([0.2, -0.4])},
           "objective": {"centers": jnp.array([0.2, -0.4])}}
  tx = optim.make_optimizer(config, lambda _: 0.1, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # SGD: -lr * g; Adam's first step: -lr * sign(g) (bias-corrected m / sqrt(v)).
  base = -0.1 * (grads["backbone"]["w"] if name == "sgd" else jnp.sign(grads["backbone"]["w"]))
  np.testing.assert_allclose(updates["backbone"]["w"], base, rtol=1e-5)
  np.testing.assert_allclose(updates["objective"]["centers"], 3.0 * base, rtol=1e-5)


def test_msfe_config_ties_center_lr_multiplier_to_ccl_field():
  from configs import msfe  # pylint: disable=g-import-not-at-top
  config = msfe.get_config("synthetic")
  config.objective.ccl.center_lr_mult = 10.0
  assert config.optimizer.lr_multipliers.centers == 10.0
