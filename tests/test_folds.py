"""ferjax.folds: aggregation of fold metrics (hand-computed), errors, the fold loop and the CLI."""

import json
import os
import subprocess
import sys
import types

import ml_collections
import pytest

from configs import lstpnet
import ferjax
from ferjax import errors, folds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAR = [0.70, 0.72, 0.68, 0.71, 0.74]     # mean 0.71, sample std sqrt(0.002 / 4)
UAR = [0.60, 0.58, 0.62, 0.60, 0.60]     # mean 0.60, sample std sqrt(0.0008 / 4)


def _write_folds(workdir, values=None):
  for k, (war, uar) in enumerate(values or zip(WAR, UAR), 1):
    per_class = {"happy": war + 0.1, "sad": uar}
    if k <= 2:
      per_class["disgust"] = 0.1 if k == 1 else 0.3   # absent from folds 3-5
    os.makedirs(folds.fold_workdir(workdir, k))
    with open(os.path.join(folds.fold_workdir(workdir, k), "final_metrics.json"), "w") as f:
      json.dump({"war": war, "uar": uar, "per_class": per_class, "step": 100 * k}, f)


def test_summary_mean_and_sample_std(tmp_path):
  _write_folds(str(tmp_path))
  summary = folds.aggregate(str(tmp_path), [1, 2, 3, 4, 5])
  assert summary["war"]["mean"] == pytest.approx(0.71)
  assert summary["war"]["std"] == pytest.approx(0.0223607, abs=1e-7)
  assert summary["uar"]["mean"] == pytest.approx(0.60)
  assert summary["uar"]["std"] == pytest.approx(0.0141421, abs=1e-7)
  assert summary["per_class"]["happy"]["mean"] == pytest.approx(0.81)
  assert summary["per_class"]["disgust"] == pytest.approx({"mean": 0.2, "std": 0.1414214})
  assert summary["folds"]["3"] == {"war": 0.68, "uar": 0.62, "step": 300}
  with open(tmp_path / "folds_summary.json") as f:
    assert json.load(f) == summary
  table = folds.format_table(summary)
  assert "71.00 ± 2.24" in table and "60.00 ± 1.41" in table


def test_single_fold_has_no_std(tmp_path):
  _write_folds(str(tmp_path), [(0.5, 0.4)])
  summary = folds.aggregate(str(tmp_path), [1])
  assert summary["war"] == {"mean": 0.5, "std": None}
  assert "50.00" in folds.format_table(summary)


def test_missing_and_malformed_metrics(tmp_path):
  _write_folds(str(tmp_path), [(0.5, 0.4)])
  with pytest.raises(FileNotFoundError, match="fold_2/final_metrics.json"):
    folds.read_fold_metrics(str(tmp_path), [1, 2])
  with open(tmp_path / "fold_1" / "final_metrics.json", "w") as f:
    f.write('{"war": 0.5}')
  with pytest.raises(ValueError, match="missing key.*uar"):
    folds.read_fold_metrics(str(tmp_path), [1])
  with open(tmp_path / "fold_1" / "final_metrics.json", "w") as f:
    f.write("{not json")
  with pytest.raises(ValueError, match="final_metrics.json:1: not valid JSON"):
    folds.read_fold_metrics(str(tmp_path), [1])


def test_run_folds_sets_fold_and_skips_finished(tmp_path, monkeypatch):
  calls = []

  def fake_train_and_evaluate(config, workdir):
    calls.append((config.dataset.fold, workdir))

  fake = types.SimpleNamespace(train_and_evaluate=fake_train_and_evaluate)
  monkeypatch.setitem(sys.modules, "ferjax.train", fake)
  monkeypatch.setattr(ferjax, "train", fake, raising=False)
  _write_folds(str(tmp_path), [(0.5, 0.4)])                 # fold 1 already finished
  config = ml_collections.ConfigDict({"dataset": {"name": "dfew", "fold": 1}})
  folds.run_folds(config, str(tmp_path), [1, 2, 3])
  assert calls == [(2, folds.fold_workdir(str(tmp_path), 2)),
                   (3, folds.fold_workdir(str(tmp_path), 3))]
  assert config.dataset.fold == 1                           # the caller's config is untouched
  with pytest.raises(errors.UserError, match="not a fold-based dataset"):
    folds.run_folds(ml_collections.ConfigDict({"dataset": {"name": "afew", "fold": 0}}),
                    str(tmp_path), [1])


def test_cli_aggregate_only(tmp_path):
  _write_folds(str(tmp_path))
  result = subprocess.run(
      [sys.executable, "-m", "ferjax.folds", "--config=configs/lstpnet.py",
       f"--workdir={tmp_path}", "--aggregate_only"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "71.00 ± 2.24" in result.stdout
  assert (tmp_path / "folds_summary.json").exists()
  missing = subprocess.run(
      [sys.executable, "-m", "ferjax.folds", "--config=configs/lstpnet.py",
       f"--workdir={tmp_path / 'none'}", "--aggregate_only"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert missing.returncode == 2 and "fold_1/final_metrics.json does not exist" in missing.stderr


def test_preempted_fold_exits_143_for_the_launcher_to_rerun(tmp_path, monkeypatch, capsys):
  def preempted(config, workdir, fold_list):
    raise errors.Preempted("stopped by SIGTERM at step 7; checkpoint saved")

  monkeypatch.setattr(folds, "FLAGS", types.SimpleNamespace(
      folds=["1"], aggregate_only=False, config=lstpnet.get_config(), workdir=str(tmp_path)))
  monkeypatch.setattr(folds.distributed, "initialize_from_flags", lambda: None)
  monkeypatch.setattr(folds, "run_folds", preempted)
  with pytest.raises(SystemExit) as exit_info:
    folds.main(["folds"])
  assert exit_info.value.code == 143
  assert capsys.readouterr().err.strip() == (
      "ferjax: stopped by SIGTERM at step 7; checkpoint saved")
