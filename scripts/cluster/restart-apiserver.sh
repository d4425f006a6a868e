#!/usr/bin/env bash
# Restart only the API server, with the exact command line up.sh gave it, and wait for /readyz.
# Tests use it to prove clients survive an API server restart.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

[ -f "$PIDS_DIR/kube-apiserver.cmd" ] || die "no API server was started from $CLUSTER_DIR"
stop_proc kube-apiserver
log "starting kube-apiserver again"
mkdir -p "$LOG_DIR"
# shellcheck disable=SC2046
eval "setsid $(cat "$PIDS_DIR/kube-apiserver.cmd")" >>"$LOG_DIR/kube-apiserver.log" 2>&1 </dev/null &
echo $! >"$PIDS_DIR/kube-apiserver.pid"
wait_for kube-apiserver 60 apiserver_ready
log "kube-apiserver ready again"
