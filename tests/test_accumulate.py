"""Gradient accumulation: n micro-batches of B give the update of one batch of nB."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import default
from ferjax import optim, train
from ferjax.data import pipeline
from ferjax.objectives import center_cosine, cross_entropy, soft_label_mining


def _micro_batches(batch: dict, n: int) -> list[dict]:
  size = len(batch["label"]) // n
  return [{k: v[i * size:(i + 1) * size] for k, v in batch.items()} for i in range(n)]


def _batch(rng, size: int, num_classes: int) -> dict:
  return {"label": jnp.asarray(rng.integers(0, num_classes, size)),
          "index": jnp.asarray(rng.permutation(size)),
          "mask": jnp.ones((size,), bool)}


def test_an_epoch_holds_whole_updates():
  # 100 examples, micro-batch 8, 4 per update: 3 updates of 32 (4 rows dropped).
  assert pipeline.steps_per_epoch(100, 8, True, 4) == 12
  assert pipeline.steps_per_epoch(100, 32, True) == 3
  assert pipeline.steps_per_epoch(100, 8, True) == 12
  assert pipeline.steps_per_epoch(90, 8, True, 4) == 8


def test_label_table_after_micro_batches_equals_the_large_batch():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 32)
  batch = _batch(rng, 32, 3)
  batch["label"] = jnp.asarray(labels)[batch["index"]]
  outputs = {"logits": jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)}
  large = soft_label_mining.SoftLabelMining(labels, 3, steps_per_epoch=5, beta=1)
  micro = soft_label_mining.SoftLabelMining(labels, 3, steps_per_epoch=5, beta=1,
                                            accumulate_steps=4)
  step = jnp.int32(7)   # Past the ramp boundary: both terms act.
  large.update(outputs, batch, step)
  for i, part in enumerate(_micro_batches(batch, 4)):
    micro.update({"logits": outputs["logits"][i * 8:(i + 1) * 8]}, part, step)
  np.testing.assert_allclose(micro.table[...], large.table[...], rtol=1e-6, atol=1e-6)
  assert not np.allclose(large.table[...], soft_label_mining.initial_label_logits(labels, 3))


def test_ema_centers_move_once_per_update_like_the_large_batch():
  rng = np.random.default_rng(1)
  batch = _batch(rng, 32, 3)
  outputs = {"features": jnp.asarray(rng.normal(size=(32, 5)), jnp.float32),
             "logits": jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)}

  def build(accumulate_steps):
    return center_cosine.CenterCosine(3, 5, center_update="ema", ema_rate=0.5,
                                      accumulate_steps=accumulate_steps, rngs=nnx.Rngs(0))

  large, micro = build(1), build(4)
  start = np.asarray(micro.centers[...])
  large_loss, _ = large(outputs, batch, 0)
  large.update(outputs, batch, 0)
  micro_losses = []
  for i, part in enumerate(_micro_batches(batch, 4)):
    part_outputs = {k: v[i * 8:(i + 1) * 8] for k, v in outputs.items()}
    micro_losses.append(micro(part_outputs, part, 0)[0])
    micro.update(part_outputs, part, 0)
    if i < 3:   # Every micro-batch's loss reads the centers of the update's start.
      np.testing.assert_array_equal(micro.centers[...], start)
  np.testing.assert_allclose(micro.centers[...], large.centers[...], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jnp.mean(jnp.stack(micro_losses)), large_loss, rtol=1e-5)
  # The next update starts from empty sums.
  assert float(micro.pending_batches[...]) == 0 and not np.any(micro.pending_sums[...])


class _Linear(nnx.Module):
  """A classifier without BatchNorm: logits = flatten(x) W + b."""

  def __init__(self, in_features: int, num_classes: int, rngs: nnx.Rngs):
    self.dense = nnx.Linear(in_features, num_classes, rngs=rngs)

  def __call__(self, x, *, train: bool):
    del train
    features = x.reshape(x.shape[0], -1)
    return {"logits": self.dense(features), "features": features}


def _train(config, batches, accumulate_steps: int):
  """Params after feeding `batches` through train.make_train_step."""
  config.optimizer.accumulate_steps = accumulate_steps
  model_graphdef, model_state = nnx.split(_Linear(4 * 4 * 3, 3, nnx.Rngs(0)))
  objective_graphdef, objective_state = nnx.split(cross_entropy.CrossEntropy(3, 0.1))
  state = train.TrainState(jnp.zeros((), jnp.int32), model_state, objective_state, None)
  params, _ = train.split_params(state)
  schedule = optim.make_schedule(config.schedule, config.optimizer.learning_rate,
                                 steps_per_epoch=2, num_epochs=2)
  tx = optim.make_optimizer(config, schedule, params)
  state = state.replace(opt_state=tx.init(params))
  step = jax.jit(train.make_train_step(model_graphdef, objective_graphdef, tx, config, 3))
  for batch in batches:
    state, _ = step(state, batch)
  return jax.tree.leaves(state.model)


def test_four_micro_batches_of_8_give_the_update_of_one_batch_of_32():
  config = default.get_config()
  config.optimizer.update(name="sgd", learning_rate=0.5, momentum=0.9, weight_decay=1e-2,
                          grad_clip_norm=1.0)
  config.schedule.update(name="cosine", warmup_epochs=0.5)
  config.input.update(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
  rng = np.random.default_rng(0)
  large = [{"image": jnp.asarray(rng.integers(0, 256, (32, 4, 4, 3)), jnp.uint8),
            "label": jnp.asarray(rng.integers(0, 3, 32)), "mask": jnp.ones((32,), bool)}
           for _ in range(3)]
  micro = [part for batch in large for part in _micro_batches(batch, 4)]
  expected = _train(config, large, 1)
  for got, want in zip(_train(config, micro, 4), expected, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The updates did move the parameters (three different learning rates).
  start = _train(config, [], 1)
  assert all(np.abs(a - b).max() > 1e-3 for a, b in zip(expected, start))
