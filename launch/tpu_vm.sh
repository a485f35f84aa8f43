#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Trains ferjax on a Cloud TPU VM slice: create, install, run on all workers, delete.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"

SPOT=0

usage() {
  cat <<HELP
Usage: launch/tpu_vm.sh --workdir=gs://BUCKET/RUN (--repo=URL | --tarball=FILE)
           [OPTION]... [-- ARG...]

Creates a TPU VM slice, installs ferjax on every worker, runs
  python -m ferjax.main --config=CONFIG --workdir=WORKDIR --distributed=required
on all workers with their output streamed here, and deletes the slice when the
run ends, fails or is interrupted (unless --keep). Exits with the run's status.
Rerunning with the same --workdir resumes from its last checkpoint.

$TPU_COMMON_HELP
  --spot                    create a Spot TPU (cheaper, can be preempted)
HELP
}

while (($#)); do
  case $1 in
    --help) usage; exit 0 ;;
    --spot) SPOT=1 ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    *) tpu_parse_flag "$1" ;;
  esac
  shift
done
tpu_check_flags

cleanup() {
  local status=$?
  if ((KEEP)); then
    echo "kept $NAME; delete it with:" \
      "gcloud compute tpus tpu-vm delete $NAME ${SCOPE[*]} --quiet" >&2
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${SCOPE[@]}" --quiet || echo "warning:" \
      "could not delete $NAME; check 'gcloud compute tpus tpu-vm list ${SCOPE[*]}'" >&2
  fi
  exit "$status"
}
trap cleanup EXIT

create=(gcloud compute tpus tpu-vm create "$NAME" "${SCOPE[@]}"
        "--accelerator-type=$ACCELERATOR" "--version=$RUNTIME")
((!SPOT)) || create+=(--spot)
run "${create[@]}" ${CREATE_FLAGS[@]+"${CREATE_FLAGS[@]}"}
tpu_install
tpu_train
