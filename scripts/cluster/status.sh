#!/usr/bin/env bash
# Print the local cluster's state, one word: "node" (control plane and node processes up),
# "control-plane", or "down"; exit 0 only when the API server answers /readyz.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

for p in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  proc_alive "$p" || { echo down; exit 1; }
done
apiserver_ready || { echo down; exit 1; }
for p in dockerd kubelet kube-proxy apiserver-relay; do
  proc_alive "$p" || { echo control-plane; exit 0; }
done
echo node
