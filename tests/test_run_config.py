"""ferjax.run_config: loop settings, ranking metrics, and resuming with a changed config."""

import json

import pytest

from configs import resnet
from ferjax import errors, run_config


def _config(**overrides):
  config = resnet.get_config("synthetic")
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


@pytest.mark.parametrize("key, value, message", [
    ("log_every_steps", 0, "config.log_every_steps must be an integer >= 1, got 0"),
    ("eval_every_epochs", 0, "config.eval_every_epochs must be an integer >= 1"),
    ("checkpoint_every_steps", -5, "config.checkpoint_every_steps must be an integer >= 1"),
    ("keep_checkpoints", 0, "config.keep_checkpoints must be an integer >= 1"),
    ("best_metric", "acc", "config.best_metric must be one of 'war', 'uar', 'war_plus_uar', got"),
])
def test_bad_loop_settings_fail_before_training(key, value, message):
  with pytest.raises(errors.UserError, match=message):
    run_config.validate(_config(**{key: value}))


def test_rules_describe_and_check_ranges():
  assert run_config.integer(1).accepts(1) and not run_config.integer(1).accepts(0)
  assert not run_config.integer(0).accepts(True)   # a bool is not a count
  probability = run_config.PROBABILITY
  assert probability.expects == "a number in [0.0, 1.0]"
  assert probability.accepts(0) and probability.accepts(1.0) and not probability.accepts(1.01)
  half_open = run_config.number(0.0, 1.0, open_high=True)
  assert half_open.expects == "a number in [0.0, 1.0)" and not half_open.accepts(1.0)
  positive = run_config.number(positive=True)
  assert positive.expects == "a number > 0.0" and not positive.accepts(0.0)
  assert not positive.accepts(float("inf"))
  triple = run_config.sequence(run_config.number(), 3)
  assert triple.accepts((0.5, 0.5, 0.5)) and triple.accepts([1, 2, 3])
  assert not triple.accepts((0.5, 0.5)) and not triple.accepts("abc")


def test_batch_larger_than_the_training_split_is_refused():
  run_config.check_batch_fits(_config(batch_size=64), 64)
  with pytest.raises(errors.UserError, match=r"config.batch_size=65 is larger than the 64 "
                                             r"training examples of synthetic_fer/images:train"):
    run_config.check_batch_fits(_config(batch_size=65), 64)


def test_ranking_values():
  metrics = {"war": 0.5, "uar": 0.25, "per_class": {}}
  assert run_config.ranking_value(metrics, "war") == 0.5
  assert run_config.ranking_value(metrics, "uar") == 0.25
  assert run_config.ranking_value(metrics, "war_plus_uar") == 0.75


def _workdir_with_checkpoint(tmp_path, config) -> str:
  (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2))
  (tmp_path / "checkpoints" / "40").mkdir(parents=True)
  return str(tmp_path)


def test_resume_with_a_different_data_stream_or_state_is_refused(tmp_path):
  workdir = _workdir_with_checkpoint(tmp_path, _config())
  with pytest.raises(errors.UserError,
                     match=r"config.batch_size=64, this command has 32; resume with the same"):
    run_config.check_resumable(_config(batch_size=32), workdir)
  with pytest.raises(errors.UserError, match=r"config.model.depth=18, this command has 34"):
    run_config.check_resumable(_config(**{"model.depth": 34}), workdir)
  with pytest.raises(errors.UserError, match=r"config.optimizer.name='sgd', this command has"):
    run_config.check_resumable(_config(**{"optimizer.name": "adamw"}), workdir)


def test_resume_may_change_schedule_length_dtype_and_data_dir(tmp_path):
  workdir = _workdir_with_checkpoint(tmp_path, _config())
  run_config.check_resumable(_config(num_epochs=20, **{"optimizer.learning_rate": 0.01,
                                                  "model.dtype": "bfloat16",
                                                  "dataset.data_dir": "/elsewhere"}), workdir)


def test_fields_unknown_to_either_version_are_not_compared(tmp_path):
  recorded = json.loads(_config().to_json_best_effort())
  del recorded["model"]["depth"]                # written before the field existed
  recorded["model"]["retired_switch"] = True    # since removed
  (tmp_path / "config.json").write_text(json.dumps(recorded))
  (tmp_path / "checkpoints" / "40").mkdir(parents=True)
  run_config.check_resumable(_config(**{"model.depth": 34}), str(tmp_path))


def test_a_workdir_without_checkpoints_accepts_any_config(tmp_path):
  (tmp_path / "config.json").write_text(_config().to_json_best_effort())
  (tmp_path / "checkpoints").mkdir()
  run_config.check_resumable(_config(batch_size=8), str(tmp_path))
