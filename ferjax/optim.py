"""Optimizers and learning-rate schedules from `config.optimizer` / `config.schedule`."""

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from ferjax import errors


def lagged_cosine(lr_max: float, lr_min: float, total_steps: int) -> optax.Schedule:
  """lr(t) = C(max(t-1, 0)), C(x) = lr_min + (lr_max-lr_min)(1 + cos(pi x/T))/2, T = `total_steps`.

  PyTorch code that calls CosineAnnealingLR.step() after every optimizer step
  sets the rate for the next step, so steps 0 and 1 both run at lr_max.
  """
  if total_steps <= 0:
    raise ValueError(f"lagged_cosine needs total_steps > 0, got {total_steps}")

  def schedule(count: jax.Array) -> jax.Array:
    x = jnp.maximum(jnp.asarray(count, jnp.float32) - 1.0, 0.0)
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + jnp.cos(jnp.pi * x / total_steps))

  return schedule


def make_schedule(schedule_config: ml_collections.ConfigDict, base_lr: float,
                  steps_per_epoch: int, num_epochs: int) -> optax.Schedule:
  """The learning rate as a function of the 0-based global step.

  Names: `constant`; `cosine` (linear warm-up, then a cosine that reaches
  `min_learning_rate` at step `steps_per_epoch * num_epochs`, one past the
  last update, like PyTorch's CosineAnnealingLR with T_max = the step count);
  `step` (x `decay_rate` every `step_epochs` epochs); `exponential`
  (x `decay_rate` after every epoch); `lagged_cosine` (a cosine
  over the same steps whose value is set after each update, one step late).
  """
  name = schedule_config.name
  total_steps = max(steps_per_epoch * num_epochs, 1)
  warmup_steps = int(schedule_config.warmup_epochs * steps_per_epoch)
  if name == "constant":
    main = optax.constant_schedule(base_lr)
  elif name == "cosine":
    alpha = schedule_config.min_learning_rate / base_lr if base_lr else 0.0
    main = optax.cosine_decay_schedule(base_lr, max(total_steps - warmup_steps, 1), alpha)
  elif name == "step":
    main = optax.exponential_decay(base_lr, schedule_config.step_epochs * steps_per_epoch,
                                   schedule_config.decay_rate, staircase=True)
  elif name == "exponential":
    main = optax.exponential_decay(base_lr, steps_per_epoch, schedule_config.decay_rate,
                                   staircase=True)
  elif name == "lagged_cosine":
    main = lagged_cosine(base_lr, schedule_config.min_learning_rate, total_steps)
  else:
    raise ValueError(f"config.schedule.name {name!r} is not one of "
                     "constant, cosine, step, exponential, lagged_cosine")
  if warmup_steps <= 0:
    return main
  warmup = optax.linear_schedule(0.0, base_lr, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def check_accumulation(config: ml_collections.ConfigDict) -> int:
  """`config.optimizer.accumulate_steps` after checking it; raises errors.UserError.

  Micro-batches are averaged with equal weights, so they must all be full:
  accumulation needs `train_drop_remainder`.
  """
  steps = config.optimizer.accumulate_steps
  if not isinstance(steps, int) or steps < 1:
    raise errors.UserError(f"config.optimizer.accumulate_steps must be an integer >= 1, "
                           f"got {steps!r}")
  if steps > 1 and not config.train_drop_remainder:
    raise errors.UserError(
        f"config.optimizer.accumulate_steps={steps} needs config.train_drop_remainder=True "
        "(a partial micro-batch would weigh as much as a full one)")
  return steps


def _path_names(path) -> set[str]:
  return {str(getattr(k, "key", getattr(k, "name", k))) for k in path}


def _decay_mask(params, excluded: tuple[str, ...]):
  """True for parameters whose path contains none of the `excluded` names."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not _path_names(path).intersection(excluded), params)


def _named_mask(params, name: str):
  """True for parameters with a path component called `name`."""
  return jax.tree_util.tree_map_with_path(lambda path, _: name in _path_names(path), params)


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule,
                   params) -> optax.GradientTransformation:
  """SGD (PyTorch-style L2 before momentum), Adam (L2) or AdamW, with optional clipping.

  With `config.optimizer.accumulate_steps` = n > 1 the whole chain runs once
  every n calls on the mean of their gradients (`optax.MultiSteps`) and leaves
  the parameters unchanged in between: n micro-batches of size B make one
  update of the batch of size nB. The schedule counts updates, so
  `schedule` must be built with the updates per epoch.

  Weight decay skips parameters under any path component named in
  `config.optimizer.no_decay` (e.g. the center cosine loss's `centers`).
  `config.optimizer.lr_multipliers` maps a path component name to a factor on
  the learning rate of the parameters under it: their final updates are
  scaled, which for SGD, Adam and AdamW equals scaling their learning rate.
  """
  opt = config.optimizer
  present = set().union(*(_path_names(path) for path, _ in
                          jax.tree_util.tree_flatten_with_path(params)[0]))
  for field, names in (("no_decay", opt.no_decay), ("lr_multipliers", opt.lr_multipliers)):
    # Shared configs name parameters some variants lack (an objective's `centers`
    # when another objective is chosen), so an unmatched name is reported, not an error.
    for name in sorted(set(names) - present):
      logging.warning("config.optimizer.%s: no parameter path contains %r", field, name)
  mask = _decay_mask(params, tuple(opt.no_decay))
  chain = []
  if opt.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == "sgd":
    chain += [optax.add_decayed_weights(opt.weight_decay, mask),
              optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)]
  elif opt.name == "adam":
    chain += [optax.add_decayed_weights(opt.weight_decay, mask),
              optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)]
  elif opt.name == "adamw":
    chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay, mask=mask))
  else:
    raise ValueError(f"config.optimizer.name {opt.name!r} is not one of sgd, adam, adamw")
  for name, multiplier in opt.lr_multipliers.items():
    if multiplier != 1.0:
      chain.append(optax.masked(optax.scale(multiplier), _named_mask(params, name)))
  tx = optax.chain(*chain)
  if opt.accumulate_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=opt.accumulate_steps).gradient_transformation()
  return tx
