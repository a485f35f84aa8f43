"""Evaluation over whole splits: WAR/UAR, confusion matrix and method reports.

Every example of an evaluated split is counted exactly once: the last batch is
padded and its padded rows are masked out. Per-example predictions, labels and
metadata are gathered to the host, where the metrics and reports (pose
buckets, embedding diagnostics, AEA's evaluation modes) are computed.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from ferjax import metrics as metrics_lib, model_inputs, sharding
from ferjax.data import pipeline

# AEA's batch-dependence check (slm_aea.md §5 `batch_shuffled`): the eval split
# in these seeded random orders, predicted with each eval batch's own mean.
SHUFFLE_SEEDS = (0, 1, 2, 3, 4)


def _eval_step(graphdef, input_config, feature_key: str | None):
  """Per-example predictions (and `features` = outputs[feature_key]) on one batch."""

  def step(state, batch):
    model, objective = nnx.merge(graphdef, state.params, state.rest)
    outputs = model_inputs.forward(model, batch, input_config, train=False)
    result = {k: v for k, v in batch.items() if k not in ("image", "frames")}
    result["prediction"] = jnp.argmax(objective.predict(outputs), -1)
    if feature_key:
      result["features"] = outputs[feature_key].astype(jnp.float32)
    return result
  return step


class Evaluator:
  """Evaluates a train state on the configured eval split(s)."""

  def __init__(self, experiment):
    self.experiment = experiment
    config = experiment.config
    names = (config.dataset.eval_split,) + tuple(config.dataset.extra_eval_splits)
    self.splits = {name: pipeline.open_split(config.dataset, name, train=False)
                   for name in dict.fromkeys(names)}
    self.want_features = config.eval_embeddings
    self.eval_predictions = None  # The last evaluation's per-example outputs on eval_split.
    self._steps = {}

  def _step_fn(self, graphdef, feature_key: str | None):
    if (graphdef, feature_key) not in self._steps:
      mesh = self.experiment.mesh
      self._steps[graphdef, feature_key] = jax.jit(
          _eval_step(graphdef, self.experiment.config.input, feature_key),
          in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
          out_shardings=sharding.batch_sharding(mesh))
    return self._steps[graphdef, feature_key]

  def _batches(self, split: pipeline.SplitSource):
    config = self.experiment.config
    loader = pipeline.BatchLoader(split, config, train=False,
                                  global_batch_size=config.eval_batch_size,
                                  drop_remainder=False)
    dataset = pipeline.make_dataset(loader, loader.steps_per_epoch,
                                    worker_count=config.input.worker_count,
                                    prefetch=config.input.prefetch)
    for host_batch in dataset:
      yield sharding.to_global_batch(host_batch, self.experiment.mesh)

  def predict(self, state, split: pipeline.SplitSource, graphdef=None) -> dict[str, np.ndarray]:
    """Per-example outputs over the split, padded rows removed, in split order."""
    step_fn = self._step_fn(graphdef or self.experiment.graphdef,
                            "features" if self.want_features else None)
    chunks = [sharding.to_host(step_fn(state, batch)) for batch in self._batches(split)]
    merged = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    keep = merged.pop("mask").astype(bool)
    return {k: v[keep] for k, v in merged.items()}

  def _split_metrics(self, outputs: dict, class_names) -> dict:
    confusion = metrics_lib.confusion_matrix(outputs["label"], outputs["prediction"],
                                             len(class_names))
    result = metrics_lib.war_uar(confusion, class_names)
    result["confusion_matrix"] = confusion.tolist()
    return result

  def evaluate(self, state, step: int, *, write_reports: bool) -> dict:
    """Metrics of the main eval split (+ `splits` for the extra ones); with
    `write_reports`, also the PNG/JSON reports and `final_metrics.json`."""
    config = self.experiment.config
    class_names = self.experiment.class_names
    state, graphdef, aea_modes = self._aea_states(state, shuffled=write_reports)
    results, outputs_by_split = {}, {}
    for name, split in self.splits.items():
      outputs = self.predict(state, split, graphdef)
      outputs_by_split[name] = outputs
      results[name] = self._split_metrics(outputs, class_names)
    self.eval_predictions = outputs_by_split[config.dataset.eval_split]
    main = dict(results.pop(config.dataset.eval_split))
    main.update(step=int(step), split=config.dataset.eval_split,
                dataset=config.dataset.name, class_names=list(class_names))
    if results:
      main["splits"] = results
    logging.info("eval at step %d: WAR %.4f UAR %.4f", step, main["war"], main["uar"])
    if not write_reports:
      return main
    main.update(self._method_reports(outputs_by_split[config.dataset.eval_split], class_names))
    if aea_modes:
      main["aea_eval_modes"] = aea_modes
    if jax.process_index() == 0:
      workdir = epath.Path(self.experiment.workdir)
      metrics_lib.plot_confusion_matrix(
          np.asarray(main["confusion_matrix"]), class_names,
          str(workdir / "confusion_matrix.png"),
          title=f"{config.dataset.name} {config.dataset.eval_split}: WAR {main['war']:.3f} "
                f"UAR {main['uar']:.3f}")
      metrics_lib.write_json(str(workdir / "final_metrics.json"), main)
    return main

  def _method_reports(self, outputs: dict, class_names) -> dict:
    """Pose buckets (config.eval_pose_buckets) and embedding diagnostics (eval_embeddings)."""
    config = self.experiment.config
    workdir = epath.Path(self.experiment.workdir)
    is_writer = jax.process_index() == 0
    reports = {}
    buckets = tuple(config.eval_pose_buckets)
    if buckets and "yaw" in outputs:
      from ferjax.evaluation import pose  # pylint: disable=g-import-not-at-top
      reports["pose"] = pose.pose_report(outputs["prediction"], outputs["label"],
                                         outputs["yaw"], outputs.get("pitch"), buckets)
      if is_writer:
        pose.plot_accuracy_vs_yaw(reports["pose"], str(workdir / "accuracy_vs_yaw.png"))
    if self.want_features:
      from ferjax.evaluation import embedding  # pylint: disable=g-import-not-at-top
      reports["embedding"] = embedding.embedding_report(outputs["features"], outputs["label"],
                                                        class_names)
      if is_writer:
        embedding.plot_embeddings(outputs["features"], outputs["label"], class_names,
                                  str(workdir / "embeddings.png"))
    return reports

  def _aea_states(self, state, *, shuffled: bool):
    """For AEA models: the state/graphdef of the configured eval mode, and both modes' metrics.

    `batch_independent` needs the train-set mean of the pooled features, computed
    here in eval mode with the current model (one pass over the train split).
    With `shuffled`, the metrics also hold `batch_shuffled` (`_shuffled_metrics`).
    """
    experiment = self.experiment
    model, objective = nnx.merge(experiment.graphdef, state.params, state.rest)
    if not hasattr(model, "set_eval_mode"):
      return state, experiment.graphdef, None
    from ferjax.models import aea  # pylint: disable=g-import-not-at-top
    model.set_eval_mode("code_faithful")
    graphdef, params, rest = nnx.split((model, objective), nnx.Param, ...)
    features_fn = self._step_fn(graphdef, "backbone_features")
    current = state.replace(params=params, rest=rest)
    model.set_fixed_mean(aea.compute_feature_mean(
        self._batches(experiment.train_split), lambda b: features_fn(current, b)["features"]))
    modes, states = {}, {}
    eval_split = self.splits[experiment.config.dataset.eval_split]
    for mode in ("code_faithful", "batch_independent"):
      model.set_eval_mode(mode)
      graphdef, params, rest = nnx.split((model, objective), nnx.Param, ...)
      states[mode] = (state.replace(params=params, rest=rest), graphdef)
      modes[mode] = self._split_metrics(self.predict(states[mode][0], eval_split, graphdef),
                                        experiment.class_names)
    if shuffled:
      modes["batch_shuffled"] = self._shuffled_metrics(*states["code_faithful"], eval_split)
    return (*states[aea.canonical_eval_mode(experiment.config.model.aea.eval_mode)], modes)

  def _shuffled_metrics(self, state, graphdef, split: pipeline.SplitSource) -> dict:
    """WAR/UAR of batch-mean (code_faithful) predictions over the split in random orders.

    With the split in file order an eval batch can be mostly one class (RAF-DB's
    test tail), and its batch mean then carries label information; shuffled
    orders measure how much the batch-mean numbers depend on that.
    Returns {war, uar: mean over SHUFFLE_SEEDS; war_std, uar_std: sample std;
    war_per_seed, uar_per_seed; seeds}.
    """
    per_seed = []
    for seed in SHUFFLE_SEEDS:
      order = np.random.default_rng(seed).permutation(len(split))
      shuffled = dataclasses.replace(split, positions=split.positions[order])
      per_seed.append(self._split_metrics(self.predict(state, shuffled, graphdef),
                                          self.experiment.class_names))
    report = {"seeds": list(SHUFFLE_SEEDS)}
    for name in ("war", "uar"):
      values = np.asarray([m[name] for m in per_seed])
      report.update({name: float(values.mean()), f"{name}_std": float(values.std(ddof=1)),
                     f"{name}_per_seed": values.tolist()})
    return report
