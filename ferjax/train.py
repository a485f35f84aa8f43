"""The training loop: sharded jitted steps, periodic evaluation, checkpoints.

`train_and_evaluate(config, workdir)` trains with evaluation every
`eval_every_epochs`, resumes from the newest readable checkpoint in
`workdir/checkpoints` when there is one, saves every `checkpoint_every_steps`,
before each evaluation, on SIGTERM (preemption) or SIGINT and at the end, and
writes `workdir/final_metrics.json`. `evaluate(config, workdir)` re-evaluates
the latest or best checkpoint. Both hold the workdir's lock (one run per
workdir); docs/reliability.md describes the failure cases.
"""

import contextlib
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions
from clu import metrics as clu_metrics
from etils import epath
from flax import nnx

from ferjax import checkpointing, ema as ema_lib, errors, evaluate as evaluate_lib, mix
from ferjax import model_inputs, reporting, run_config, sharding, stop_signals, summaries
from ferjax import workdir_lock
from ferjax.data import pipeline
from ferjax.models import registry as model_registry
from ferjax.objectives import registry as objective_registry
from ferjax import optim


class NonFiniteLoss(errors.UserError):
  """The loss became NaN or inf; training stopped before saving that state."""

  def __init__(self, loss: str, step: int, last_good_step: int | None):
    kept = (f"last good checkpoint: step {last_good_step}" if last_good_step is not None
            else "no checkpoint was written")
    super().__init__(f"loss is {loss} at step {step}; training stopped ({kept}). Lower "
                     "config.optimizer.learning_rate or set config.optimizer.grad_clip_norm")


@flax.struct.dataclass
class TrainState:
  """What a checkpoint's `state` item holds (checkpointing.STATE_KEYS).

  `model` and `objective` are the full `nnx.State`s of the two modules (params
  and every other variable); the optimizer acts on their `nnx.Param`s, as
  the tree `{"model": params, "objective": params}`. `ema` is the moving
  average of `model` (ferjax.ema) when `config.ema.decay` > 0, else None.
  """
  step: jax.Array
  model: nnx.State
  objective: nnx.State
  opt_state: optax.OptState
  ema: nnx.State | None = None

  def to_dict(self) -> dict:
    names = checkpointing.STATE_KEYS + (() if self.ema is None else (checkpointing.EMA_KEY,))
    return {name: getattr(self, name) for name in names}


def split_params(state: TrainState) -> tuple[dict, dict]:
  """({"model": params, "objective": params}, the same for every other variable)."""
  model_params, model_rest = nnx.split_state(state.model, nnx.Param, ...)
  objective_params, objective_rest = nnx.split_state(state.objective, nnx.Param, ...)
  return ({"model": model_params, "objective": objective_params},
          {"model": model_rest, "objective": objective_rest})


def masked_accuracy(scores: jax.Array, batch: dict) -> jax.Array:
  correct = (jnp.argmax(scores, -1) == batch["label"]) & batch["mask"]
  return jnp.sum(correct) / jnp.maximum(jnp.sum(batch["mask"]), 1)


def make_train_step(model_graphdef, objective_graphdef, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict, num_classes: int):
  """One step on a global (micro-)batch; returns the new state and scalars.

  With `config.optimizer.accumulate_steps` = n, `tx` updates the parameters
  every n-th step; objectives see the update count, and the EMA moves after
  each update. `config.input`'s Mixup/CutMix mixes the batch first.
  """
  accumulate = config.optimizer.accumulate_steps
  mixer = mix.make_mixer(config.input, num_classes, config.seed)

  def merge(params, rest, copy=False):
    return (nnx.merge(model_graphdef, params["model"], rest["model"], copy=copy),
            nnx.merge(objective_graphdef, params["objective"], rest["objective"], copy=copy))

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    params, rest = split_params(state)
    if mixer is not None:
      batch = mixer(batch, state.step)
    update_step = state.step // accumulate

    def loss_fn(params, rest):
      model, objective = merge(params, rest, copy=True)
      outputs = model_inputs.forward(model, batch, config.input, train=True)
      loss, metrics = objective(outputs, batch, update_step)
      rest = {"model": nnx.state(model, nnx.Not(nnx.Param)),
              "objective": nnx.state(objective, nnx.Not(nnx.Param))}
      return loss, (outputs, metrics, rest)

    (loss, (outputs, metrics, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, rest)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    model, objective = merge(params, rest, copy=True)
    outputs = jax.lax.stop_gradient(outputs)
    objective.update(outputs, batch, update_step)
    accuracy = masked_accuracy(objective.predict(outputs), batch)
    metrics = {"loss": loss, "accuracy": accuracy, **metrics}
    model_state = nnx.state(model)
    ema = state.ema
    if ema is not None:
      ema = ema_lib.update(ema, model_state, config.ema.decay,
                           updated=(state.step + 1) % accumulate == 0)
    return TrainState(state.step + 1, model_state, nnx.state(objective), opt_state,
                      ema), metrics

  return train_step


class Experiment:
  """Everything a run needs, built from the config: data, model, optimizer, state."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    run_config.validate(config)
    self.config = config
    self.workdir = workdir
    self.mesh = sharding.make_mesh()
    num_devices = jax.device_count()
    for name in ("batch_size", "eval_batch_size"):
      if config[name] % num_devices:
        raise errors.UserError(f"config.{name}={config[name]} is not divisible by the "
                               f"{num_devices} devices")
    data = config.dataset
    self.train_split = pipeline.open_split(data, data.train_split, train=True)
    run_config.check_batch_fits(config, len(self.train_split))
    self.class_names = self.train_split.class_names
    self.num_classes = data.num_classes
    self.drop_remainder = config.train_drop_remainder
    self.accumulate_steps = optim.check_accumulation(config)
    ema_lib.check_config(config.ema)
    self.steps_per_epoch = pipeline.steps_per_epoch(
        len(self.train_split), config.batch_size, self.drop_remainder, self.accumulate_steps)
    self.updates_per_epoch = self.steps_per_epoch // self.accumulate_steps
    self.num_train_steps = self.steps_per_epoch * config.num_epochs
    model, objective = self._build_modules()
    mix.check_config(config.input, objective, config.objective.name)
    self.model_graphdef, model_state = nnx.split(model)
    self.objective_graphdef, objective_state = nnx.split(objective)
    model_state, objective_state = sharding.to_global_replicated(
        (model_state, objective_state), self.mesh)
    step = sharding.to_global_replicated(np.zeros((), np.int32), self.mesh)
    ema = ema_lib.init(model_state) if ema_lib.enabled(config.ema) else None
    self.state = TrainState(step, model_state, objective_state, None, ema)
    params, _ = split_params(self.state)
    try:
      # The schedule counts optimizer updates.
      self.schedule = optim.make_schedule(config.schedule, config.optimizer.learning_rate,
                                          self.updates_per_epoch, config.num_epochs)
      self.tx = optim.make_optimizer(config, self.schedule, params)
    except ValueError as e:
      raise errors.UserError(str(e)) from None
    replicated = sharding.replicated(self.mesh)
    self.state = self.state.replace(
        opt_state=jax.jit(self.tx.init, out_shardings=replicated)(params))
    self.train_step = jax.jit(make_train_step(self.model_graphdef, self.objective_graphdef,
                                              self.tx, config, self.num_classes),
                              in_shardings=(replicated, sharding.batch_sharding(self.mesh)),
                              out_shardings=(replicated, replicated), donate_argnums=0)

  def _build_modules(self) -> tuple[nnx.Module, nnx.Module]:
    config = self.config
    rngs = nnx.Rngs(config.seed)
    try:
      model = model_registry.build_model(config.model, self.num_classes, rngs=rngs)
      if not config.init_from and not config.dataset.name.startswith("synthetic_fer"):
        logging.warning("%s: training from scratch (config.init_from is empty); the "
                        "papers' recipes start from pretrained weights, see "
                        "docs/checkpoints.md", config.dataset.name)
      if config.init_from:
        from ferjax import convert  # pylint: disable=g-import-not-at-top
        report = convert.load_init(model, config.init_from, partial=not config.init_strict,
                                   class_order=config.init_class_order or None)
        logging.info("init_from %s:\n%s", config.init_from, report)
      self.context = objective_registry.TrainContext.for_split(
          self.train_split, label_key=config.dataset.label_key, num_classes=self.num_classes,
          feature_dim=self._feature_dim(model), steps_per_epoch=self.updates_per_epoch,
          accumulate_steps=self.accumulate_steps)
      objective = objective_registry.build_objective(config.objective, self.context, rngs=rngs)
    except (ValueError, FileNotFoundError, ImportError) as e:
      raise errors.UserError(str(e).splitlines()[0]) from None
    return model, objective

  def _feature_dim(self, model: nnx.Module) -> int:
    size = self.config.input.image_size
    shape = ((1, self.config.input.num_frames, size, size, 3)
             if self.config.dataset.kind == "clip" else (1, size, size, 3))
    dummy = {"image": jax.ShapeDtypeStruct(shape, jnp.uint8),
             "mask": jax.ShapeDtypeStruct((1,), jnp.bool_)}
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, b: model_inputs.forward(
        nnx.merge(graphdef, s), b, self.config.input, train=False), state, dummy)
    return out["features"].shape[-1]

  def train_iterator(self):
    loader = pipeline.BatchLoader(self.train_split, self.config, train=True,
                                  global_batch_size=self.config.batch_size,
                                  drop_remainder=self.drop_remainder)
    dataset = pipeline.make_dataset(loader, self.num_train_steps,
                                    worker_count=self.config.input.worker_count,
                                    prefetch=self.config.input.prefetch)
    return iter(dataset)

  def abstract_state(self) -> dict:
    """The restore target of a checkpoint's `state` item (replicated)."""
    return checkpointing.abstract_like(self.state.to_dict(), sharding.replicated(self.mesh))

  def restore(self, checkpointer: checkpointing.Checkpointer, step: int,
              iterator=None) -> TrainState:
    return TrainState(**checkpointer.restore(step, self.abstract_state(), iterator))

  def make_runner(self) -> evaluate_lib.Runner:
    try:
      return evaluate_lib.Runner(self.config, self.workdir, mesh=self.mesh,
                                 objective_graphdef=self.objective_graphdef,
                                 train_split=self.train_split, class_names=self.class_names)
    except ValueError as e:
      raise errors.UserError(str(e)) from None

  def prepare_eval(self, runner: evaluate_lib.Runner, state: TrainState, step: int, *,
                   final: bool) -> tuple[dict[str, Any], TrainState]:
    """Runs the evaluators' `prepare` hooks on the model and, if kept, its EMA.

    Returns the eval contexts (`model`, and `ema`) and the state to keep and
    save, holding what the hooks stored in the model states.
    """
    contexts = {}
    try:
      contexts["model"] = runner.prepare(self.model_graphdef, state.model, state.objective,
                                         step, final=final)
      state = state.replace(model=contexts["model"].model_state)
      if state.ema is not None:
        contexts[checkpointing.EMA_KEY] = runner.prepare(
            self.model_graphdef, state.ema, state.objective, step, final=False)
        state = state.replace(ema=contexts[checkpointing.EMA_KEY].model_state)
    except ValueError as e:
      raise errors.UserError(str(e).splitlines()[0]) from None
    return contexts, state

  def finish_eval(self, runner: evaluate_lib.Runner, contexts: dict[str, Any]) -> dict:
    """Runs the evaluators on prepared contexts: the model's metrics, the EMA's under `ema`."""
    try:
      extra = {}
      if checkpointing.EMA_KEY in contexts:
        extra[checkpointing.EMA_KEY] = ema_lib.metrics_of(
            runner.evaluate(contexts[checkpointing.EMA_KEY]))
      return runner.evaluate(contexts["model"], extra=extra)
    except ValueError as e:
      raise errors.UserError(str(e).splitlines()[0]) from None

  def evaluate(self, runner: evaluate_lib.Runner, state: TrainState, step: int, *,
               final: bool) -> tuple[dict, TrainState]:
    """Prepares and runs the evaluators: (metrics, the state with what they stored)."""
    contexts, state = self.prepare_eval(runner, state, step, final=final)
    return self.finish_eval(runner, contexts), state


def _eval_scalars(eval_metrics: dict) -> dict[str, float]:
  """`eval/war`, `eval/recall/<class>`, ... and the EMA's `eval/ema/war`, ... for TensorBoard."""
  scalars = {f"eval/{k}": v for k, v in summaries.eval_scalars(eval_metrics).items()}
  scalars.update({f"eval/{checkpointing.EMA_KEY}/{k}": v for k, v in
                  summaries.eval_scalars(eval_metrics.get(checkpointing.EMA_KEY, {})).items()})
  return scalars


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_workdir(workdir: str) -> None:
  """Creates the (local or `gs://`) workdir and checks that this process can write to it."""
  try:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    probe = epath.Path(workdir) / f".write_test_{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise errors.UserError(f"workdir {workdir} is not writable: {e.strerror or e}") from None


class _LossWatch:
  """Keeps the per-step scalars since the last report; finds the first non-finite loss."""

  def __init__(self):
    self.pending: list[tuple[int, dict]] = []

  def add(self, step: int, metrics: dict) -> None:
    self.pending.append((step, metrics))

  def flush(self, last_good_step: int | None) -> dict[str, float]:
    """Averages (clu.metrics.Average) of the pending scalars; raises on NaN/inf."""
    pending = jax.device_get(self.pending)
    self.pending = []
    for step, metrics in pending:
      if not np.isfinite(metrics["loss"]):
        raise NonFiniteLoss(str(metrics["loss"]), step, last_good_step)
    averages = {}
    for name in pending[0][1] if pending else ():
      values = np.asarray([m[name] for _, m in pending], np.float64)
      averages[name] = float(clu_metrics.Average.from_model_output(values).compute())
    return averages


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (resuming when possible), evaluates and writes final_metrics.json."""
  _check_workdir(workdir)
  with workdir_lock.acquire(workdir):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  run_config.check_resumable(config, workdir)
  experiment = Experiment(config, workdir)
  checkpointer = checkpointing.Checkpointer(
      str(epath.Path(workdir) / "checkpoints"), keep=config.keep_checkpoints,
      best_metric=config.best_metric)
  # Without TensorBoard (config.tensorboard=False) the scalars and hparams are only logged.
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0 or not config.tensorboard)
  if jax.process_index() == 0:
    (epath.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2))
  writer.write_hparams(summaries.flat_hparams(config))
  state = experiment.state
  iterator = experiment.train_iterator()
  start_step, restored = checkpointer.restore_latest(
      experiment.abstract_state(), iterator, last_step=experiment.num_train_steps)
  if start_step:
    # Assigned to the experiment too: frees the initial state's device memory.
    state = experiment.state = TrainState(**restored)
    logging.info("Resumed from step %d.", start_step)
  start_step = start_step or 0
  checkpointer.check_space()  # A full disk stops the run now, not at its first save.
  runner = experiment.make_runner()
  total = experiment.num_train_steps
  progress = reporting.Progress(total_steps=total, steps_per_epoch=experiment.steps_per_epoch,
                               start_step=start_step)
  # One trace window, counted in steps only (no minimum duration, no hourly repeats).
  profile = (periodic_actions.Profile(logdir=workdir, num_profile_steps=config.profile_steps,
                                      profile_duration_ms=None, every_secs=None,
                                      first_profile=start_step + config.profile_first_step)
             if config.profile_steps and jax.process_index() == 0 else None)
  watch = _LossWatch()
  last_saved = start_step or None
  stop_signal_handling = contextlib.ExitStack()
  stop_requests = stop_signal_handling.enter_context(stop_signals.stop_at_step_boundary())
  logging.info("Training %d steps (%d per epoch) on %d devices.", total,
               experiment.steps_per_epoch, jax.device_count())
  final = None
  try:
    step = start_step
    while step < total:
      batch = sharding.to_global_batch(next(iterator), experiment.mesh)
      state, metrics = experiment.train_step(state, batch)
      step += 1
      watch.add(step, metrics)
      progress.step(step, metrics)
      if profile is not None:
        profile(step)
      epoch_end = step % experiment.steps_per_epoch == 0
      eval_now = step == total or (
          epoch_end and (step // experiment.steps_per_epoch) % config.eval_every_epochs == 0)
      save_now = step == total or step % config.checkpoint_every_steps == 0 or eval_now
      stop_now = bool(stop_requests) or checkpointer.manager.reached_preemption(step)
      if step % config.log_every_steps == 0 or save_now or stop_now:
        averages = watch.flush(last_saved)
        if averages:
          progress.report(step, averages["loss"])
          averages["learning_rate"] = float(
              experiment.schedule((step - 1) // experiment.accumulate_steps))
          if progress.steps_per_second() is not None:
            averages["steps_per_sec"] = progress.steps_per_second()
          writer.write_scalars(step, {f"train/{k}": v for k, v in averages.items()})
      # Saved before evaluating (every eval step is a save step): a failing or killed
      # evaluation loses no training. Its metrics rank the saved step afterwards. The
      # evaluators' `prepare` hooks run first: what they store in the model state (a
      # feature mean) belongs in the checkpoint.
      if eval_now:
        with progress.paused():
          eval_context, state = experiment.prepare_eval(runner, state, step,
                                                        final=step == total)
      if save_now or stop_now:
        if not _all_finite(state.model):
          raise NonFiniteLoss("NaN/inf (the parameters are not finite)", step, last_saved)
        with progress.paused():
          checkpointer.save(step, state.to_dict(), iterator)
        last_saved = step
      if eval_now:
        with progress.paused():
          eval_metrics = experiment.finish_eval(runner, eval_context)
        if step == total:
          final = eval_metrics
        writer.write_scalars(step, _eval_scalars(eval_metrics))
        checkpointer.rank(step, {name: run_config.ranking_value(eval_metrics, name)
                                 for name in run_config.RANKING_METRICS})
      if stop_now:
        checkpointer.wait()
        how = stop_signals.name(stop_requests[0]) if stop_requests else "SIGTERM"
        message = (f"stopped by {how} at step {step}; checkpoint saved in {workdir}/"
                   "checkpoints. Rerun the same command to resume.")
        if stop_requests:
          raise stop_signals.Interrupted(stop_requests[0], message)
        raise errors.Preempted(message)  # JAX's multi-process preemption sync.
    checkpointer.wait()
    stop_signal_handling.close()  # From here on a signal stops the run at once.
    if final is None:  # Resumed from the last step's checkpoint: nothing left to train.
      final, state = experiment.evaluate(runner, state, step, final=True)
    objective = nnx.merge(experiment.objective_graphdef, state.objective)
    if hasattr(objective, "on_train_end"):
      objective.on_train_end(workdir, experiment.context)
    writer.flush()
    progress.close()
    reporting.print_summary(reporting.summary_lines(
        final, workdir, best=reporting.best_checkpoint(checkpointer.manager, config.best_metric),
        best_metric=config.best_metric, tensorboard=config.tensorboard))
    return final
  finally:
    progress.close()
    stop_signal_handling.close()
    checkpointer.close()


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the latest (or, with eval_checkpoint='best', the best) checkpoint.

  A workdir without checkpoints evaluates the `init_from` weights (e.g. the
  converted official weights) at step 0.
  """
  if config.eval_checkpoint not in ("latest", "best"):
    raise errors.UserError("config.eval_checkpoint must be 'latest' or 'best', got "
                           f"{config.eval_checkpoint!r}")
  if config.eval_ema and not ema_lib.enabled(config.ema):
    raise errors.UserError("config.eval_ema=True needs config.ema.decay > 0, as in the "
                           "training run")
  _check_workdir(workdir)
  run_config.check_evaluable(config, workdir)
  with workdir_lock.acquire(workdir):
    return _evaluate(config, workdir)


def _evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  checkpoint_dir = epath.Path(workdir) / "checkpoints"
  if not checkpointing.saved_steps(str(checkpoint_dir)):
    if not config.init_from:
      raise errors.UserError(f"no checkpoints in {checkpoint_dir}: train first, check "
                             "--workdir, or give --config.init_from")
    experiment = Experiment(config, workdir)
    return experiment.evaluate(experiment.make_runner(), experiment.state, 0, final=True)[0]
  experiment = Experiment(config, workdir)
  checkpointer = checkpointing.Checkpointer(str(checkpoint_dir), keep=config.keep_checkpoints,
                                            best_metric=config.best_metric)
  try:
    step = (checkpointer.best_step() if config.eval_checkpoint == "best"
            else checkpointer.latest_step())
    if step is None:
      raise errors.UserError(f"no {config.eval_checkpoint} checkpoint in {checkpoint_dir}")
    state = experiment.restore(checkpointer, step)
    if config.eval_ema:
      state = state.replace(model=state.ema, ema=None)
    metrics = experiment.evaluate(experiment.make_runner(), state, step, final=True)[0]
    reporting.print_summary(reporting.summary_lines(
        metrics, workdir, best=reporting.best_checkpoint(checkpointer.manager, config.best_metric),
        best_metric=config.best_metric, tensorboard=config.tensorboard))
    return metrics
  finally:
    checkpointer.close()
