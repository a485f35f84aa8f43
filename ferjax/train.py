"""The training loop: sharded jitted steps, periodic evaluation, checkpoints.

`train_and_evaluate(config, workdir)` trains with evaluation every
`eval_every_epochs`, resumes from the latest checkpoint in `workdir/checkpoints`
when there is one, saves every `checkpoint_every_steps`, on SIGTERM
(preemption) and at the end, and writes `workdir/final_metrics.json`.
`evaluate(config, workdir)` re-evaluates the latest or best checkpoint.
"""

import signal

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

from ferjax import checkpointing, errors, evaluate as evaluate_lib, model_inputs, reporting
from ferjax import run_config, sharding, summaries
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
  step: jax.Array
  params: nnx.State
  rest: nnx.State       # BatchNorm statistics and objective state (label tables, centers)
  opt_state: optax.OptState


def masked_accuracy(scores: jax.Array, batch: dict) -> jax.Array:
  correct = (jnp.argmax(scores, -1) == batch["label"]) & batch["mask"]
  return jnp.sum(correct) / jnp.maximum(jnp.sum(batch["mask"]), 1)


def make_train_step(graphdef, tx: optax.GradientTransformation, input_config):
  """One optimisation step on a global batch; returns the new state and scalars."""

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    def loss_fn(params, rest):
      model, objective = nnx.merge(graphdef, params, rest, copy=True)
      outputs = model_inputs.forward(model, batch, input_config, train=True)
      loss, metrics = objective(outputs, batch, state.step)
      return loss, (outputs, metrics, nnx.state((model, objective), nnx.Not(nnx.Param)))

    (loss, (outputs, metrics, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.rest)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    model, objective = nnx.merge(graphdef, params, rest, copy=True)
    outputs = jax.lax.stop_gradient(outputs)
    objective.update(outputs, batch, state.step)
    accuracy = masked_accuracy(objective.predict(outputs), batch)
    rest = nnx.state((model, objective), nnx.Not(nnx.Param))
    metrics = {"loss": loss, "accuracy": accuracy, **metrics}
    return TrainState(state.step + 1, params, rest, opt_state), metrics

  return train_step


class Experiment:
  """Everything a run needs, built from the config: data, model, optimizer, state."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    run_config.check_run_settings(config)
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
    self.class_names = self.train_split.class_names
    self.num_classes = data.num_classes
    self.drop_remainder = config.train_drop_remainder
    self.steps_per_epoch = pipeline.steps_per_epoch(
        len(self.train_split), config.batch_size, self.drop_remainder)
    self.num_train_steps = self.steps_per_epoch * config.num_epochs
    model, objective = self._build_modules()
    self.graphdef, params, rest = nnx.split((model, objective), nnx.Param, ...)
    try:
      self.schedule = optim.make_schedule(config.schedule, config.optimizer.learning_rate,
                                          self.steps_per_epoch, config.num_epochs)
      self.tx = optim.make_optimizer(config, self.schedule, params)
    except ValueError as e:
      raise errors.UserError(str(e)) from None
    params, rest = sharding.to_global_replicated((params, rest), self.mesh)
    replicated = sharding.replicated(self.mesh)
    opt_state = jax.jit(self.tx.init, out_shardings=replicated)(params)
    step = sharding.to_global_replicated(np.zeros((), np.int32), self.mesh)
    self.state = TrainState(step, params, rest, opt_state)
    self.train_step = jax.jit(make_train_step(self.graphdef, self.tx, config.input),
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
      feature_dim = self._feature_dim(model)
      objective = objective_registry.build_objective(
          config.objective, num_classes=self.num_classes, feature_dim=feature_dim,
          num_train_examples=self.train_split.num_records, rngs=rngs,
          **self._objective_inputs())
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

  def _objective_inputs(self) -> dict:
    """Method-specific inputs some objectives need (SLM: the training labels)."""
    if self.config.objective.name != "soft_label_mining":
      return {}
    train_labels = self.train_split.column(self.config.dataset.label_key)
    return {"train_labels": train_labels, "steps_per_epoch": self.steps_per_epoch}

  def train_iterator(self):
    loader = pipeline.BatchLoader(self.train_split, self.config, train=True,
                                  global_batch_size=self.config.batch_size,
                                  drop_remainder=self.drop_remainder)
    dataset = pipeline.make_dataset(loader, self.num_train_steps,
                                    worker_count=self.config.input.worker_count,
                                    prefetch=self.config.input.prefetch)
    return iter(dataset)

  def abstract_state(self):
    return checkpointing.abstract_like(self.state, sharding.replicated(self.mesh))


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
  run_config.check_resumable(config, workdir)
  experiment = Experiment(config, workdir)
  checkpointer = checkpointing.Checkpointer(
      str(epath.Path(workdir) / "checkpoints"), keep=config.keep_checkpoints,
      best_metric=config.best_metric)
  start_step = checkpointer.latest_step() or 0
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if jax.process_index() == 0:
    (epath.Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2))
  writer.write_hparams(summaries.flat_hparams(config))
  state = experiment.state
  iterator = experiment.train_iterator()
  if start_step:
    state = checkpointer.restore(start_step, experiment.abstract_state(), iterator)
    experiment.state = state  # Frees the initial state's device memory.
    logging.info("Resumed from step %d.", start_step)
  evaluator = evaluate_lib.Evaluator(experiment)
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
  preempted = []
  # Multi-process runs rely on JAX's own SIGTERM handler, synced across hosts through
  # reached_preemption; a local flag could stop hosts at different steps.
  previous = (signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
              if jax.process_count() == 1 else None)
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
      stop_now = bool(preempted) or checkpointer.manager.reached_preemption(step)
      if step % config.log_every_steps == 0 or save_now or stop_now:
        averages = watch.flush(last_saved)
        if averages:
          progress.report(step, averages["loss"])
          averages["learning_rate"] = float(experiment.schedule(step - 1))
          if progress.steps_per_second() is not None:
            averages["steps_per_sec"] = progress.steps_per_second()
          writer.write_scalars(step, {f"train/{k}": v for k, v in averages.items()})
      eval_metrics = None
      if eval_now:
        with progress.paused():
          eval_metrics = evaluator.evaluate(state, step, write_reports=step == total)
          if jax.process_index() == 0:
            writer.write_images(step, summaries.eval_images(
                evaluator.splits[config.dataset.eval_split], evaluator.eval_predictions,
                experiment.class_names, f"{config.dataset.eval_split}, step {step}"))
        if step == total:
          final = eval_metrics
        writer.write_scalars(step, {f"eval/{k}": v for k, v in
                                    summaries.eval_scalars(eval_metrics).items()})
      if save_now or stop_now:
        if not _all_finite(state.params):
          raise NonFiniteLoss("NaN/inf (the parameters are not finite)", step, last_saved)
        ranking = (None if eval_metrics is None else
                   {config.best_metric: run_config.ranking_value(eval_metrics,
                                                                 config.best_metric)})
        with progress.paused():
          checkpointer.save(step, state, iterator, metrics=ranking)
        last_saved = step
      if stop_now:
        checkpointer.wait()
        raise errors.Preempted(f"stopped by SIGTERM at step {step}; checkpoint saved in "
                        f"{workdir}/checkpoints. Rerun the same command to resume.")
    checkpointer.wait()
    if final is None:  # Resumed from the last step's checkpoint: nothing left to train.
      final = evaluator.evaluate(state, step, write_reports=True)
    if config.objective.get("export_soft_labels"):
      _export_soft_labels(experiment, state)
    writer.flush()
    progress.close()
    reporting.print_summary(reporting.summary_lines(
        final, workdir, best=reporting.best_checkpoint(checkpointer.manager, config.best_metric),
        best_metric=config.best_metric))
    return final
  finally:
    progress.close()
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
    checkpointer.close()


def _export_soft_labels(experiment: Experiment, state: TrainState) -> None:
  """Writes SLM's mined labels per training example to workdir/soft_labels.{npz,csv}.

  Every process reads the split (ids, labels) so that all reach the shutdown
  barrier together; only process 0 writes.
  """
  from ferjax.objectives import soft_label_mining  # pylint: disable=g-import-not-at-top
  _, objective = nnx.merge(experiment.graphdef, state.params, state.rest)
  split = experiment.train_split
  ids = [""] * split.num_records
  hard = np.full((split.num_records,), -1, np.int64)
  for j in range(len(split)):
    position, record = split.record(j)
    example_id = record.get("id")
    ids[position] = example_id.decode() if isinstance(example_id, bytes) else str(position)
    hard[position] = int(record[experiment.config.dataset.label_key])
  if jax.process_index() > 0:
    return
  paths = soft_label_mining.export_soft_labels(
      np.asarray(objective.table[...]), ids, hard, epath.Path(experiment.workdir) / "soft_labels")
  logging.info("Mined soft labels written to %s", ", ".join(paths))


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Evaluates the latest (or, with eval_checkpoint='best', the best) checkpoint.

  A workdir without checkpoints evaluates the `init_from` weights (e.g. the
  official LSTPNet checkpoints) at step 0.
  """
  if config.eval_checkpoint not in ("latest", "best"):
    raise errors.UserError("config.eval_checkpoint must be 'latest' or 'best', got "
                           f"{config.eval_checkpoint!r}")
  _check_workdir(workdir)
  checkpoint_dir = epath.Path(workdir) / "checkpoints"
  if not checkpointing.saved_steps(str(checkpoint_dir)):
    if not config.init_from:
      raise errors.UserError(f"no checkpoints in {checkpoint_dir}: train first, check "
                             "--workdir, or give --config.init_from")
    experiment = Experiment(config, workdir)
    return evaluate_lib.Evaluator(experiment).evaluate(experiment.state, 0, write_reports=True)
  experiment = Experiment(config, workdir)
  checkpointer = checkpointing.Checkpointer(str(checkpoint_dir), keep=config.keep_checkpoints,
                                            best_metric=config.best_metric)
  try:
    step = (checkpointer.best_step() if config.eval_checkpoint == "best"
            else checkpointer.latest_step())
    if step is None:
      raise errors.UserError(f"no {config.eval_checkpoint} checkpoint in {checkpoint_dir}")
    state = checkpointer.restore(step, experiment.abstract_state(), None)
    metrics = evaluate_lib.Evaluator(experiment).evaluate(state, step, write_reports=True)
    reporting.print_summary(reporting.summary_lines(
        metrics, workdir, best=reporting.best_checkpoint(checkpointer.manager, config.best_metric),
        best_metric=config.best_metric))
    return metrics
  finally:
    checkpointer.close()
