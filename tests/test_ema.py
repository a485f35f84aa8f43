"""Weight EMA (ferjax.ema): the update rule and its settings.

A run that resumes the EMA bitwise and evaluates it is in tests/test_plugins.py.
"""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ferjax import ema, errors


def test_ema_update_rule():
  average = {"w": jnp.asarray([1.0, -2.0]), "count": jnp.asarray(3, jnp.int32)}
  current = {"w": jnp.asarray([3.0, 2.0]), "count": jnp.asarray(5, jnp.int32)}
  moved = ema.update(average, current, 0.9)
  # 0.9 * 1 + 0.1 * 3 = 1.2; 0.9 * -2 + 0.1 * 2 = -1.6; integers are copied.
  np.testing.assert_allclose(moved["w"], [1.2, -1.6], rtol=1e-6)
  assert int(moved["count"]) == 5
  held = ema.update(average, current, 0.9, updated=jnp.asarray(False))
  np.testing.assert_array_equal(held["w"], average["w"])
  twice = ema.update(moved, current, 0.9)
  np.testing.assert_allclose(twice["w"], [0.9 * 1.2 + 0.3, 0.9 * -1.6 + 0.2], rtol=1e-6)
  copy = ema.init(current)
  assert copy["w"] is not current["w"]
  np.testing.assert_array_equal(copy["w"], current["w"])


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_ema_decay_out_of_range_is_refused(decay):
  with pytest.raises(errors.UserError, match="config.ema.decay"):
    ema.check_config(ml_collections.ConfigDict({"decay": decay}))
