#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Runs ferjax as N processes on this machine (CPU) to test multi-process training.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NUM_PROCESSES=2
DEVICES_PER_PROCESS=2
PORT=8476
PYTHON=python3
CONFIG=configs/resnet.py:synthetic
WORKDIR="${TMPDIR:-/tmp}/ferjax-local-$(date +%Y%m%d-%H%M%S)"
DATA_DIR=""
EXTRA_ARGS=()

usage() {
  cat <<HELP
Usage: launch/local.sh [OPTION]... [-- ARG...]

Starts NUM processes of
  env JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=DEVICES PYTHON -m ferjax.main \\
      --config=CONFIG --workdir=WORKDIR --coordinator_address=127.0.0.1:PORT \\
      --num_processes=NUM --process_id=I
from the repository root, the same computation a NUM-host slice runs, with
each line of output prefixed by its process. When one process fails the
others are killed; the exit status is the first failure's (0 if none).

  --num-processes=NUM       processes [$NUM_PROCESSES]
  --devices-per-process=N   CPU devices per process [$DEVICES_PER_PROCESS]
  --port=PORT               coordinator port on 127.0.0.1 [$PORT]
  --python=PYTHON           interpreter [$PYTHON]
  --config=FILE[:ARG]       ferjax config [$CONFIG]
  --workdir=DIR             checkpoints and logs [\${TMPDIR:-/tmp}/ferjax-local-DATE-TIME]
  --data-dir=DIR            TFDS data dir [the config's]
  --dry-run                 print the commands, one per line; run nothing
  --help                    this help
  -- ARG...                 extra flags for ferjax.main (e.g. --config.num_epochs=1)
HELP
}

while (($#)); do
  case $1 in
    --help) usage; exit 0 ;;
    --num-processes=*) NUM_PROCESSES=$(opt_value "$1") ;;
    --devices-per-process=*) DEVICES_PER_PROCESS=$(opt_value "$1") ;;
    --port=*) PORT=$(opt_value "$1") ;;
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
require_int --num-processes "$NUM_PROCESSES"
require_int --devices-per-process "$DEVICES_PER_PROCESS"
require_int --port "$PORT"
((PORT < 65536)) || die "--port=$PORT is not a port number"

PIDS=()

# stop_all: kills the processes still running, with their children (data loader
# workers): they cannot finish without their peers.
stop_all() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}

# prefix_lines I: copies stdin to stdout, each line prefixed with "[process I] ".
prefix_lines() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    printf '[process %s] %s\n' "$1" "$line"
  done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

run cd "$REPO_ROOT"
set -m  # Each process in its own process group, so that stop_all reaches its children.
for ((i = 0; i < NUM_PROCESSES; i++)); do
  set_main_command "$PYTHON" "$CONFIG" "$WORKDIR" "$DATA_DIR" \
    "--coordinator_address=127.0.0.1:$PORT" "--num_processes=$NUM_PROCESSES" "--process_id=$i" \
    ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
  command=(env JAX_PLATFORMS=cpu "JAX_NUM_CPU_DEVICES=$DEVICES_PER_PROCESS" "${MAIN_COMMAND[@]}")
  if ((DRY_RUN)); then
    command_line "${command[@]}"
    continue
  fi
  echo "+ $(command_line "${command[@]}") &" >&2
  "${command[@]}" > >(prefix_lines "$i") 2>&1 &
  PIDS+=("$!")
done
((!DRY_RUN)) || exit 0

status=0
running=("${PIDS[@]}")
while ((${#running[@]})); do
  sleep 1
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    code=0
    wait "$pid" || code=$?
    if ((code != 0 && status == 0)); then
      status=$code
      echo "local.sh: process with pid $pid exited with status $code; stopping the others" >&2
      stop_all
    fi
  done
  running=(${still[@]+"${still[@]}"})
done
exit "$status"
