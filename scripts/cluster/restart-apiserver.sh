#!/usr/bin/env bash
# Restart only the API server, with the exact command line up.sh gave it, and wait for /readyz.
# Tests use it to prove clients survive an API server restart.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

take_cluster_lock
log "restarting kube-apiserver"
# Its graceful shutdown hangs for 20 s and more here with watches open; etcd keeps everything, so
# a short grace period is enough and keeps the outage short for tests running beside.
restart_proc kube-apiserver 5
wait_for kube-apiserver 180 apiserver_ready
log "kube-apiserver ready again"
