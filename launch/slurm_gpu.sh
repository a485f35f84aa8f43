#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Submits a ferjax training run over GPU nodes to SLURM: one process per GPU.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NODES=2
GPUS_PER_NODE=8
JOB_NAME=ferjax
TIME=24:00:00
PARTITION=""
ACCOUNT=""
CPUS_PER_TASK=""
PYTHON=python3
CONFIG=configs/lstpnet.py
WORKDIR=""
DATA_DIR=""
LOG_DIR=logs
SIGNAL_SECONDS=300
SBATCH_FLAGS=()
EXTRA_ARGS=()

usage() {
  cat <<HELP
Usage: launch/slurm_gpu.sh --workdir=DIR [OPTION]... [-- ARG...]

Submits one sbatch job over NODES nodes with one task per GPU, whose single step is
  srun --kill-on-bad-exit=1 PYTHON -m ferjax.main --config=CONFIG --workdir=DIR \\
      --distributed=required
jax.distributed detects the SLURM job (coordinator, process count and id, and
GPU SLURM_LOCALID for each task). Submit from the repository root's environment:
sbatch exports it (PATH with the venv holding 'pip install -e .[test] jax[cuda13]').
The job gets SIGTERM SIGNAL_SECONDS before its time limit, so it can checkpoint;
resubmitting with the same --workdir resumes. The log is LOG_DIR/JOB_NAME-JOBID.out.

Job:
  --nodes=N                 nodes [$NODES]
  --gpus-per-node=N         GPUs per node = tasks per node [$GPUS_PER_NODE]
  --time=HH:MM:SS           time limit [$TIME]
  --partition=NAME          partition [the cluster's default]
  --account=NAME            account to charge [your default]
  --cpus-per-task=N         CPU cores per task (data loading) [the cluster's default]
  --job-name=NAME           job name [$JOB_NAME]
  --log-dir=DIR             directory for the job's output (relative: to the
                            repository root) [$LOG_DIR]
  --signal-seconds=N        SIGTERM this long before the time limit [$SIGNAL_SECONDS]
  --sbatch-flag=FLAG        extra sbatch flag, repeatable (e.g. --sbatch-flag=--exclusive)
Run:
  --python=PYTHON           interpreter on the nodes [$PYTHON]
  --config=FILE[:ARG]       ferjax config [$CONFIG]
  --workdir=DIR             checkpoints and logs, on storage every node sees
                            (shared file system or gs://) (required)
  --data-dir=DIR            TFDS data dir [the config's]
  --dry-run                 print the commands, one per line; run nothing
  --help                    this help
  -- ARG...                 extra flags for ferjax.main (e.g. --config.batch_size=256)
HELP
}

while (($#)); do
  case $1 in
    --help) usage; exit 0 ;;
    --nodes=*) NODES=$(opt_value "$1") ;;
    --gpus-per-node=*) GPUS_PER_NODE=$(opt_value "$1") ;;
    --time=*) TIME=$(opt_value "$1") ;;
    --partition=*) PARTITION=$(opt_value "$1") ;;
    --account=*) ACCOUNT=$(opt_value "$1") ;;
    --cpus-per-task=*) CPUS_PER_TASK=$(opt_value "$1") ;;
    --job-name=*) JOB_NAME=$(opt_value "$1") ;;
    --log-dir=*) LOG_DIR=$(opt_value "$1") ;;
    --signal-seconds=*) SIGNAL_SECONDS=$(opt_value "$1") ;;
    --sbatch-flag=*) SBATCH_FLAGS+=("$(opt_value "$1")") ;;
    --python=*) PYTHON=$(opt_value "$1") ;;
    --config=*) CONFIG=$(opt_value "$1") ;;
    --workdir=*) WORKDIR=$(opt_value "$1") ;;
    --data-dir=*) DATA_DIR=$(opt_value "$1") ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ -n $WORKDIR ]] || die "--workdir=DIR is required (on storage that every node sees)"
for option in nodes:$NODES gpus-per-node:$GPUS_PER_NODE signal-seconds:$SIGNAL_SECONDS \
  ${CPUS_PER_TASK:+cpus-per-task:$CPUS_PER_TASK}; do
  require_int "--${option%%:*}" "${option#*:}"
done
[[ $LOG_DIR == /* ]] || LOG_DIR=$REPO_ROOT/$LOG_DIR

set_main_command "$PYTHON" "$CONFIG" "$WORKDIR" "$DATA_DIR" --distributed=required \
  ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
step=(srun --kill-on-bad-exit=1 "${MAIN_COMMAND[@]}")
sbatch=(sbatch "--job-name=$JOB_NAME" "--nodes=$NODES" "--ntasks-per-node=$GPUS_PER_NODE"
        "--gpus-per-node=$GPUS_PER_NODE" "--time=$TIME" "--signal=TERM@$SIGNAL_SECONDS"
        "--chdir=$REPO_ROOT" "--output=$LOG_DIR/%x-%j.out")
[[ -z $PARTITION ]] || sbatch+=("--partition=$PARTITION")
[[ -z $ACCOUNT ]] || sbatch+=("--account=$ACCOUNT")
[[ -z $CPUS_PER_TASK ]] || sbatch+=("--cpus-per-task=$CPUS_PER_TASK")
sbatch+=(${SBATCH_FLAGS[@]+"${SBATCH_FLAGS[@]}"} "--wrap=$(command_line "${step[@]}")")

run mkdir -p "$LOG_DIR"
run "${sbatch[@]}"
