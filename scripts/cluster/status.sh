#!/usr/bin/env bash
# Print the local cluster's state, one word: "node" (control plane and node up), "control-plane",
# "degraded" (some control-plane process runs but the API does not answer /readyz), or "down"
# (none runs); exit 0 only when the API server answers /readyz.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

alive=0
for p in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  proc_alive "$p" && alive=$((alive + 1))
done
[ "$alive" -gt 0 ] || { echo down; exit 1; }
{ [ "$alive" = 4 ] && apiserver_ready; } || { echo degraded; exit 1; }
for p in dockerd kubelet kube-proxy apiserver-relay; do
  proc_alive "$p" || { echo control-plane; exit 0; }
done
echo node
