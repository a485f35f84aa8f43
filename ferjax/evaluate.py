"""Runs the configured evaluators over whole splits.

Every example of an evaluated split is counted exactly once: the last batch is
padded and its padded rows are masked out. The per-example predictions, labels,
batch metadata and the model outputs the evaluators ask for are gathered to
the host, where each evaluator of `config.evals` computes its metrics and
writes its reports (`ferjax.evaluators`).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from ferjax import metrics as metrics_lib, model_inputs, sharding
from ferjax.data import pipeline
from ferjax.evaluators import registry as evaluator_registry


def _eval_step(graphdef, objective_graphdef, input_config, keys: tuple[str, ...]):
  """Per-example `prediction`, batch fields (not pixels) and outputs[keys] on one batch."""

  def step(model_state, objective_state, batch):
    model = nnx.merge(graphdef, model_state)
    objective = nnx.merge(objective_graphdef, objective_state)
    outputs = model_inputs.forward(model, batch, input_config, train=False)
    result = {k: v for k, v in batch.items() if k not in ("image", "frames")}
    result["prediction"] = jnp.argmax(objective.predict(outputs), -1)
    for key in keys:
      result[key] = outputs[key].astype(jnp.float32)
    return result
  return step


class Runner:
  """Predicts splits with any (graphdef, model state) and runs the evaluators on them."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, mesh,
               objective_graphdef, train_split: pipeline.SplitSource,
               class_names: tuple[str, ...]):
    self.config = config
    self.workdir = workdir
    self.mesh = mesh
    self.objective_graphdef = objective_graphdef
    self.train_split = train_split
    self.class_names = tuple(class_names)
    names = (config.dataset.eval_split,) + tuple(config.dataset.extra_eval_splits)
    self.splits = {name: pipeline.open_split(config.dataset, name, train=False)
                   for name in dict.fromkeys(names)}
    try:
      evaluators = evaluator_registry.build_evaluators(config.evals)
    except (ValueError, KeyError, AttributeError) as e:
      raise ValueError(str(e).splitlines()[0] or repr(e)) from None
    # Without event files (config.tensorboard=False) a TensorBoard-only evaluator has
    # nowhere to write; the default config lists one, so it is skipped, not refused.
    self.evaluators = {name: evaluator for name, evaluator in evaluators.items()
                       if config.tensorboard or not getattr(evaluator, "writes_tensorboard",
                                                            False)}
    self._steps = {}
    self._objective_state = None

  def _step_fn(self, graphdef, keys: tuple[str, ...]):
    if (graphdef, keys) not in self._steps:
      replicated = sharding.replicated(self.mesh)
      self._steps[graphdef, keys] = jax.jit(
          _eval_step(graphdef, self.objective_graphdef, self.config.input, keys),
          in_shardings=(replicated, replicated, sharding.batch_sharding(self.mesh)),
          out_shardings=sharding.batch_sharding(self.mesh))
    return self._steps[graphdef, keys]

  def _batches(self, split: pipeline.SplitSource):
    config = self.config
    loader = pipeline.BatchLoader(split, config, train=False,
                                  global_batch_size=config.eval_batch_size,
                                  drop_remainder=False)
    dataset = pipeline.make_dataset(loader, loader.steps_per_epoch,
                                    worker_count=config.input.worker_count,
                                    prefetch=config.input.prefetch)
    for host_batch in dataset:
      yield sharding.to_global_batch(host_batch, self.mesh)

  def predict(self, graphdef, model_state, split: pipeline.SplitSource,
              keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Per-example arrays over `split` in split order, padded rows removed."""
    step_fn = self._step_fn(graphdef, tuple(keys))
    chunks = [sharding.to_host(step_fn(model_state, self._objective_state, batch))
              for batch in self._batches(split)]
    merged = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    keep = merged.pop("mask").astype(bool)
    return {k: v[keep] for k, v in merged.items()}

  def prepare(self, graphdef, model_state, objective_state, step: int, *,
              final: bool) -> evaluator_registry.EvalContext:
    """Starts an evaluation: its context, after every evaluator's `prepare` hook.

    `context.model_state` is then the model state to keep (and to save: a hook
    may store a statistic in it, such as a train-set feature mean).
    With `final`, evaluators write their reports.
    """
    config = self.config
    self._objective_state = objective_state
    context = evaluator_registry.EvalContext(
        step=int(step), final=final, is_writer=jax.process_index() == 0,
        workdir=self.workdir, dataset_name=config.dataset.name, class_names=self.class_names,
        eval_split_name=config.dataset.eval_split,
        eval_split=self.splits[config.dataset.eval_split], train_split=self.train_split,
        graphdef=graphdef, model_state=model_state, predict=self.predict)
    for evaluator in self.evaluators.values():
      if hasattr(evaluator, "prepare"):
        context.graphdef, context.model_state = evaluator.prepare(context)
    return context

  def evaluate(self, context: evaluator_registry.EvalContext,
               extra: dict | None = None) -> dict:
    """Predicts every eval split and runs the evaluators on a `prepare`d context.

    `extra` (e.g. another model state's metrics) joins the metrics. With
    `context.final` they also go to workdir/final_metrics.json.
    """
    config, step, final = self.config, context.step, context.final
    keys = tuple(dict.fromkeys(key for e in self.evaluators.values() for key in e.needs))
    outputs_keys = tuple(key for key in keys if key not in config.dataset.metadata)
    for name, split in self.splits.items():
      context.predictions[name] = self.predict(context.graphdef, context.model_state, split,
                                               outputs_keys)
    main = context.predictions[config.dataset.eval_split]
    missing = [key for key in keys if key not in main]
    if missing:
      raise ValueError(f"config.evals needs {', '.join(missing)} per example (set "
                       "config.dataset.metadata or use a model that outputs them)")
    metrics = {"step": int(step), "split": config.dataset.eval_split,
               "dataset": config.dataset.name, "class_names": list(self.class_names)}
    for evaluator in self.evaluators.values():
      metrics.update(evaluator(context, main))
    metrics.update(extra or {})
    logging.info("eval at step %d: %s", step, ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    if final and context.is_writer:
      metrics_lib.write_json(str(epath.Path(self.workdir) / "final_metrics.json"), metrics)
    return metrics
