r"""Cross-validation folds (DFEW's five): train each fold, then mean ± std of WAR/UAR.

  python -m ferjax.folds --config=configs/lstpnet.py --workdir=DIR
  python -m ferjax.folds --config=configs/lstpnet.py --workdir=DIR --aggregate_only

Fold k trains with `config.dataset.fold = k` in `DIR/fold_k` (a fold whose
`final_metrics.json` exists is not retrained; an interrupted one resumes from
its checkpoints). The summary `DIR/folds_summary.json` holds the per-fold
WAR/UAR and their mean and sample standard deviation (ddof=1), also for the
per-class recalls; a table in percent is printed.
"""

import json
import sys

from absl import flags, logging
from etils import epath
import ml_collections
import numpy as np

from ferjax import cli, distributed, errors, paths

FLAGS = flags.FLAGS
cli.define_config_flag("Config file or packaged config name, optionally with :ARG.")
flags.DEFINE_string("workdir", None, "Directory holding fold_1 .. fold_K.")
flags.DEFINE_bool("aggregate_only", False, "Only read the folds' final_metrics.json.")
flags.DEFINE_list("folds", ["1", "2", "3", "4", "5"], "The folds to run / aggregate.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()
flags.adopt_module_key_flags(distributed)

METRICS_FILE = "final_metrics.json"
SUMMARY_FILE = "folds_summary.json"


def fold_workdir(workdir: str, fold: int) -> str:
  return str(epath.Path(workdir) / f"fold_{fold}")


def read_fold_metrics(workdir: str, folds: list[int]) -> dict[int, dict]:
  """fold -> its final_metrics.json (which must hold `war`, `uar`, `per_class`, `step`).

  Raises:
    FileNotFoundError: a fold has no final_metrics.json.
    ValueError: a file is not JSON or lacks one of the keys.
  """
  results = {}
  for fold in folds:
    path = epath.Path(fold_workdir(workdir, fold)) / METRICS_FILE
    if not path.exists():
      raise FileNotFoundError(f"{path} does not exist: fold {fold} has not finished")
    try:
      metrics = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    missing = [key for key in ("war", "uar", "per_class", "step") if key not in metrics]
    if missing:
      raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    results[fold] = metrics
  return results


def _mean_std(values: list[float]) -> dict[str, float | None]:
  """Mean and sample std (ddof=1; None for a single value)."""
  values = np.asarray(values, np.float64)
  std = float(values.std(ddof=1)) if len(values) > 1 else None
  return {"mean": float(values.mean()), "std": std}


def summarize(results: dict[int, dict]) -> dict:
  """Per-fold WAR/UAR and mean ± std over folds of WAR, UAR and each class's recall.

  A class's recall is averaged over the folds whose test set contains it.
  """
  folds = sorted(results)
  classes = []
  for fold in folds:
    classes += [name for name in results[fold]["per_class"] if name not in classes]
  return {
      "num_folds": len(folds),
      "std_ddof": 1,
      "folds": {str(k): {key: results[k][key] for key in ("war", "uar", "step")}
                for k in folds},
      "war": _mean_std([results[k]["war"] for k in folds]),
      "uar": _mean_std([results[k]["uar"] for k in folds]),
      "per_class": {name: _mean_std([results[k]["per_class"][name] for k in folds
                                     if name in results[k]["per_class"]])
                    for name in classes},
  }


def _percent(stats: dict) -> str:
  std = "" if stats["std"] is None else f" ± {100 * stats['std']:.2f}"
  return f"{100 * stats['mean']:.2f}{std}"


def format_table(summary: dict) -> str:
  """The summary as a plain-text table in percent."""
  lines = [f"{'fold':>8}  {'WAR':>14}  {'UAR':>14}"]
  for fold, metrics in summary["folds"].items():
    lines.append(f"{fold:>8}  {100 * metrics['war']:>14.2f}  {100 * metrics['uar']:>14.2f}")
  lines.append(f"{'mean':>8}  {_percent(summary['war']):>14}  {_percent(summary['uar']):>14}")
  lines.append("per-class recall (mean ± std over folds):")
  lines += [f"  {name:>10}  {_percent(stats)}" for name, stats in summary["per_class"].items()]
  return "\n".join(lines)


def aggregate(workdir: str, folds: list[int]) -> dict:
  """Reads the folds' metrics and writes DIR/folds_summary.json; returns the summary."""
  from ferjax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top  # matplotlib
  summary = summarize(read_fold_metrics(workdir, folds))
  metrics_lib.write_json(str(epath.Path(workdir) / SUMMARY_FILE), summary)
  return summary


def run_folds(config: ml_collections.ConfigDict, workdir: str, folds: list[int]) -> None:
  """Trains and evaluates every fold that has no final_metrics.json yet."""
  # ferjax.train pulls in TensorFlow (clu writers); aggregation does not need it.
  from ferjax import train  # pylint: disable=g-import-not-at-top
  if not config.dataset.fold:
    raise errors.UserError(f"config.dataset.fold is 0: {config.dataset.name} is not a "
                           "fold-based dataset")
  for fold in folds:
    fold_dir = fold_workdir(workdir, fold)
    if _finished(fold_dir):
      logging.info("fold %d already finished in %s", fold, fold_dir)
      continue
    fold_config = config.copy_and_resolve_references()
    fold_config.dataset.fold = fold
    logging.info("fold %d -> %s", fold, fold_dir)
    train.train_and_evaluate(fold_config, fold_dir)


def _finished(fold_dir: str) -> bool:
  """Whether the fold wrote its metrics, as process 0 sees it: every process must
  take the same branch, or their collectives would not match."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  done = (epath.Path(fold_dir) / METRICS_FILE).exists()
  if jax.process_count() > 1:
    done = bool(multihost_utils.broadcast_one_to_all(np.int32(done)))
  return done


def _parse_folds(values: list[str]) -> list[int]:
  try:
    folds = [int(v) for v in values]
  except ValueError:
    raise errors.UserError(f"--folds must be integers, got {','.join(values)}") from None
  if not folds or min(folds) < 1:
    raise errors.UserError(f"--folds must be >= 1, got {','.join(values)}")
  return folds


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    errors.exit_with(f"unexpected arguments: {' '.join(argv[1:])}")
  # Loaded here, not at import, so that --help answers at once.
  import jax  # pylint: disable=g-import-not-at-top
  from ferjax import run_config  # pylint: disable=g-import-not-at-top
  try:
    folds = _parse_folds(FLAGS.folds)
    workdir = paths.absolute(FLAGS.workdir, "--workdir")
    if not FLAGS.aggregate_only:
      run_config.validate(FLAGS.config)
      distributed.initialize_from_flags()
      run_folds(FLAGS.config, workdir, folds)
  except errors.UserError as e:
    errors.exit_with(e)
  except errors.Preempted as e:
    print(f"ferjax: {e}", file=sys.stderr)
    sys.exit(143)
  if jax.process_index() > 0:
    return
  try:
    summary = aggregate(workdir, folds)
  except (FileNotFoundError, ValueError) as e:  # a missing or malformed final_metrics.json
    errors.exit_with(e)
  print(format_table(summary))


def run() -> None:
  """Console entry point `ferjax-folds`."""
  cli.run(main, sys.modules[__name__], errors.parse_flags)


if __name__ == "__main__":
  run()
