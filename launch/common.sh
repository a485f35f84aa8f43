# shellcheck shell=bash disable=SC2034
# (SC2034: DRY_RUN and REPO_ROOT are read by the scripts that source this file.)
# Helpers shared by the ferjax launch scripts (sourced, not run).
#
# Every script runs its external commands through `run`, so that `--dry-run`
# (DRY_RUN=1) prints each command on one line, shell-quoted so that it can be
# copied and run as is, and executes nothing.

DRY_RUN=0
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# die MESSAGE...: prints "SCRIPT: error: MESSAGE" and exits with status 2.
die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

# quote WORD: WORD as one shell word; plain words stay unquoted, and in
# --flag=VALUE only the VALUE is quoted.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ ^(--?[A-Za-z0-9_.-]+=)(.+)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# command_line WORD...: the words as one shell command line.
command_line() {
  local line="" word
  for word in "$@"; do
    line+="${line:+ }$(quote "$word")"
  done
  printf '%s\n' "$line"
}

# run CMD...: prints CMD under --dry-run; otherwise echoes it to stderr and runs it.
run() {
  if ((DRY_RUN)); then
    command_line "$@"
  else
    echo "+ $(command_line "$@")" >&2
    "$@"
  fi
}

# opt_value --name=VALUE: VALUE; an empty VALUE is an error.
opt_value() {
  local value=${1#*=}
  [[ -n $value ]] || die "${1%%=*} needs a value: ${1%%=*}=VALUE"
  printf '%s' "$value"
}

# require_int NAME VALUE: VALUE must be a positive integer.
require_int() {
  [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1=$2 is not a positive integer"
}

# set_main_command PYTHON CONFIG WORKDIR DATA_DIR ARG...: sets MAIN_COMMAND to the
# training command; DATA_DIR "" keeps the config's data_dir; ARGs go last.
set_main_command() {
  MAIN_COMMAND=("$1" -m ferjax.main "--config=$2" "--workdir=$3")
  [[ -z $4 ]] || MAIN_COMMAND+=("--config.dataset.data_dir=$4")
  MAIN_COMMAND+=("${@:5}")
}
