# shellcheck shell=bash disable=SC2034
# (SC2034: the settings here are read by the scripts that source this file.)
# Options and remote steps shared by tpu_vm.sh and tpu_queued.sh (sourced).
#
# On every worker of the slice: the code goes to ~/ferjax (git clone or a
# copied tarball), a Python venv to ~/ferjax-venv (made by uv, which fetches
# the interpreter if the image lacks it), then the README's install command
# plus jax[tpu]; training runs `python -m ferjax.main` on all workers at once,
# and JAX's cluster detection joins them into one run.

NAME="ferjax-$(date +%Y%m%d-%H%M%S)"
ZONE=us-central2-b
PROJECT=""
ACCELERATOR=v4-32
RUNTIME=tpu-ubuntu2204-base
REPO_URL=""
BRANCH=main
TARBALL=""
PYTHON_VERSION=3.11
CONFIG=configs/lstpnet.py
WORKDIR=""
DATA_DIR=""
STAGE_DATA=0
KEEP=0
CREATE_FLAGS=()
EXTRA_ARGS=()
SCOPE=()

TPU_COMMON_HELP="Slice:
  --name=NAME               TPU (and queued resource) name [ferjax-DATE-TIME]
  --zone=ZONE               zone with capacity for the type [$ZONE]
  --project=PROJECT         Google Cloud project [gcloud's default]
  --accelerator-type=TYPE   e.g. v4-32, v5litepod-16, v5p-32 [$ACCELERATOR]
  --version=RUNTIME         TPU software version, e.g. v2-alpha-tpuv5-lite for
                            v5e [$RUNTIME]
  --create-flag=FLAG        extra flag for the create command, repeatable
                            (e.g. --create-flag=--service-account=SA)
Code (exactly one):
  --repo=URL                git repository to clone on every worker
  --branch=BRANCH           branch or tag of --repo [$BRANCH]
  --tarball=FILE            local archive of the repository root, copied to
                            every worker (git archive -o ferjax.tar.gz HEAD)
  --python-version=X.Y      Python for the venv [$PYTHON_VERSION]
Run:
  --config=FILE[:ARG]       ferjax config [$CONFIG]
  --workdir=gs://...        checkpoints and logs (required; shared by all hosts)
  --data-dir=DIR            TFDS data dir (gs://...) [the config's]
  --stage-data              copy --data-dir to each worker's disk before training
                            (faster random access than reading from GCS)
  --keep                    keep the TPU after the run instead of deleting it
  --dry-run                 print the commands, one per line; run nothing
  --help                    this help
  -- ARG...                 extra flags for ferjax.main (e.g. --config.num_epochs=5)"

# tpu_parse_flag ARG: consumes one shared option; anything else is an error.
tpu_parse_flag() {
  case $1 in
    --name=*) NAME=$(opt_value "$1") ;;
    --zone=*) ZONE=$(opt_value "$1") ;;
    --project=*) PROJECT=$(opt_value "$1") ;;
    --accelerator-type=*) ACCELERATOR=$(opt_value "$1") ;;
    --version=*) RUNTIME=$(opt_value "$1") ;;
    --create-flag=*) CREATE_FLAGS+=("$(opt_value "$1")") ;;
    --repo=*) REPO_URL=$(opt_value "$1") ;;
    --branch=*) BRANCH=$(opt_value "$1") ;;
    --tarball=*) TARBALL=$(opt_value "$1") ;;
    --python-version=*) PYTHON_VERSION=$(opt_value "$1") ;;
    --config=*) CONFIG=$(opt_value "$1") ;;
    --workdir=*) WORKDIR=$(opt_value "$1") ;;
    --data-dir=*) DATA_DIR=$(opt_value "$1") ;;
    --stage-data) STAGE_DATA=1 ;;
    --keep) KEEP=1 ;;
    --dry-run) DRY_RUN=1 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
}

# tpu_check_flags: validates the shared options and sets SCOPE.
tpu_check_flags() {
  [[ $NAME =~ ^[a-z]([-a-z0-9]{0,60}[a-z0-9])?$ ]] ||
    die "--name=$NAME: use lowercase letters, digits and hyphens, starting with a letter"
  [[ -n $WORKDIR ]] || die "--workdir=gs://BUCKET/PATH is required"
  [[ $WORKDIR == gs://?* ]] ||
    die "--workdir=$WORKDIR must be a gs:// path: every host of the slice writes to it"
  if [[ -n $REPO_URL && -n $TARBALL ]] || [[ -z $REPO_URL && -z $TARBALL ]]; then
    die "give exactly one of --repo=URL and --tarball=FILE"
  fi
  [[ -z $TARBALL || -f $TARBALL ]] || die "--tarball=$TARBALL: no such file"
  ((!STAGE_DATA)) || [[ -n $DATA_DIR ]] || die "--stage-data needs --data-dir=gs://..."
  [[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die "--python-version=$PYTHON_VERSION is not X.Y"
  SCOPE=("--zone=$ZONE")
  [[ -z $PROJECT ]] || SCOPE+=("--project=$PROJECT")
}

# tpu_ssh_all COMMAND: runs the shell COMMAND on every worker, output streamed here.
tpu_ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${SCOPE[@]}" --worker=all "--command=$1"
}

# tpu_install: code, venv and packages (and staged data) on every worker. Remote
# commands start in the home directory, so paths are relative to it.
tpu_install() {
  local fetch
  if [[ -n $TARBALL ]]; then
    run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME:ferjax-source.tar" "${SCOPE[@]}" \
      --worker=all
    fetch="mkdir ferjax && tar -xf ferjax-source.tar -C ferjax"
  else
    fetch="git clone --quiet --depth=1 $(command_line "--branch=$BRANCH" "$REPO_URL") ferjax"
  fi
  local steps=(
    "rm -rf ferjax ferjax-venv"
    "$fetch"
    "curl -LsSf https://astral.sh/uv/install.sh | sh"
    ".local/bin/uv venv --quiet --seed --python=$PYTHON_VERSION ferjax-venv"
  )
  if ((STAGE_DATA)); then
    steps+=("rm -rf ferjax-data" "mkdir ferjax-data"
            "gcloud storage rsync --recursive $(quote "$DATA_DIR") ferjax-data")
  fi
  steps+=("cd ferjax" "../ferjax-venv/bin/pip install --quiet -e \".[test]\" \"jax[tpu]\"")
  local joined
  joined=$(printf ' && %s' "${steps[@]}")
  tpu_ssh_all "${joined# && }"
}

# tpu_train: runs ferjax.main on every worker; returns its exit status.
tpu_train() {
  local data_dir=$DATA_DIR
  ((!STAGE_DATA)) || data_dir=../ferjax-data  # tpu_install's copy, from ~/ferjax.
  set_main_command python "$CONFIG" "$WORKDIR" "$data_dir" --distributed=required \
    ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}
  tpu_ssh_all "cd ferjax && . ../ferjax-venv/bin/activate && $(command_line "${MAIN_COMMAND[@]}")"
}
