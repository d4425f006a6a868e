#!/usr/bin/env bash
# Stop the local cluster started by up.sh: every process by its recorded pid (node first, then the
# control plane), then the kubelet's leftover mounts and cgroups, the iptables chains dockerd,
# kubelet and kube-proxy leave behind, and exactly the guards up.sh added.
#
#   scripts/cluster/down.sh [--purge]     --purge also deletes the state dir (certs, images, logs)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/guards.sh"

purge=0
case ${1:-} in
  --purge) purge=1 ;;
  "") ;;
  *) die "unknown argument: $1" ;;
esac

[ -d "$CLUSTER_DIR" ] || { log "nothing to stop: no $CLUSTER_DIR"; exit 0; }

remove_containers() {
  proc_alive dockerd || return 0
  local ids
  ids=$($DOCKER ps -aq 2>/dev/null || true)
  [ -z "$ids" ] || $DOCKER rm -f $ids >/dev/null 2>&1 || true
}

remove_kubelet_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

stop_node() {
  local was_node=0
  [ -f "$PIDS_DIR/kubelet.pid" ] || [ -f "$PIDS_DIR/dockerd.pid" ] && was_node=1
  stop_proc kube-proxy
  stop_proc kubelet
  remove_containers
  stop_proc dockerd 40
  stop_proc apiserver-relay
  [ "$was_node" = 1 ] || return 0
  [ -x "$K8S_BIN/kube-proxy" ] && "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  unmount_under "$CLUSTER_DIR"
  remove_kubelet_cgroups
  remove_runtime_chains
}

main() {
  take_cluster_lock
  stop_node
  stop_proc kube-scheduler
  stop_proc kube-controller-manager
  stop_proc kube-apiserver 5
  stop_proc etcd
  remove_guards
  rm -f "$CLUSTER_DIR/users/"* 2>/dev/null || true
  if [ "$purge" = 1 ]; then
    unmount_under "$CLUSTER_DIR"
    rm -rf "$CLUSTER_DIR"
    log "stopped and purged $CLUSTER_DIR"
  else
    log "stopped (state kept in $CLUSTER_DIR)"
  fi
}

main
