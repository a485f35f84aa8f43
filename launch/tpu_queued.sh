#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Trains ferjax on a Spot TPU slice from a queued resource: request, wait, run, delete.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"

VALID_FOR=24h
POLL_SECONDS=60
ATTEMPTS=1

usage() {
  cat <<HELP
Usage: launch/tpu_queued.sh --workdir=gs://BUCKET/RUN (--repo=URL | --tarball=FILE)
           [OPTION]... [-- ARG...]

Requests a Spot TPU slice as a queued resource, waits until it is ACTIVE,
installs ferjax on every worker, runs
  python -m ferjax.main --config=CONFIG --workdir=WORKDIR --distributed=required
on all workers with their output streamed here, and deletes the queued resource
and its TPU when the run ends, fails or is interrupted (unless --keep).
After a preemption, --attempts > 1 requests a new slice and resumes from the
last checkpoint in --workdir (so does rerunning the same command).

$TPU_COMMON_HELP
Queue:
  --valid-for=DURATION      give up if not provisioned within it [$VALID_FOR]
  --poll-seconds=N          seconds between state checks [$POLL_SECONDS]
  --attempts=N              runs to try, counting those cut off by preemption [$ATTEMPTS]
HELP
}

while (($#)); do
  case $1 in
    --help) usage; exit 0 ;;
    --valid-for=*) VALID_FOR=$(opt_value "$1") ;;
    --poll-seconds=*) POLL_SECONDS=$(opt_value "$1") ;;
    --attempts=*) ATTEMPTS=$(opt_value "$1") ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    *) tpu_parse_flag "$1" ;;
  esac
  shift
done
tpu_check_flags
require_int --poll-seconds "$POLL_SECONDS"
require_int --attempts "$ATTEMPTS"

delete_queued() {
  run gcloud compute tpus queued-resources delete "$NAME" "${SCOPE[@]}" --force --quiet
}

cleanup() {
  local status=$?
  if ((KEEP)); then
    echo "kept $NAME; delete it with:" \
      "gcloud compute tpus queued-resources delete $NAME ${SCOPE[*]} --force --quiet" >&2
  else
    delete_queued || echo "warning: could not delete $NAME; check" \
      "'gcloud compute tpus queued-resources list ${SCOPE[*]}'" >&2
  fi
  exit "$status"
}

# queued_state: the queued resource's state (ACTIVE, WAITING_FOR_RESOURCES, ...).
queued_state() {
  run gcloud compute tpus queued-resources describe "$NAME" "${SCOPE[@]}" \
    "--format=value(state.state)"
}

# wait_active: polls until the slice is ACTIVE; an end state is an error.
wait_active() {
  if ((DRY_RUN)); then
    queued_state
    return
  fi
  local state last=""
  while true; do
    state=$(queued_state 2>/dev/null) || state="UNKNOWN (describe failed)"
    [[ $state == "$last" ]] || echo "queued resource $NAME: $state" >&2
    last=$state
    case $state in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDING | SUSPENDED) die "queued resource $NAME is $state; see" \
        "'gcloud compute tpus queued-resources describe $NAME ${SCOPE[*]}'" ;;
    esac
    sleep "$POLL_SECONDS"
  done
}

trap cleanup EXIT
for ((attempt = 1; ; attempt++)); do
  run gcloud compute tpus queued-resources create "$NAME" "${SCOPE[@]}" "--node-id=$NAME" \
    "--accelerator-type=$ACCELERATOR" "--runtime-version=$RUNTIME" --spot \
    "--valid-until-duration=$VALID_FOR" ${CREATE_FLAGS[@]+"${CREATE_FLAGS[@]}"}
  wait_active
  tpu_install
  status=0
  tpu_train || status=$?
  ((status != 0)) || exit 0
  state=$(queued_state 2>/dev/null) || state=UNKNOWN
  if ((attempt >= ATTEMPTS)) || [[ $state == ACTIVE ]]; then
    echo "run failed with status $status (slice $state)" >&2
    exit "$status"
  fi
  echo "run stopped with status $status and slice $state (preempted): attempt" \
    "$((attempt + 1)) of $ATTEMPTS" >&2
  delete_queued
done
