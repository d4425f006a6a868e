#!/usr/bin/env bash
# Undo scripts/cluster-up.sh: delete the demo OmniDeployments (while the operator still runs, so
# its finalizers are honoured and every child goes), `helm uninstall`, then stop the local cluster.
#
#   bash scripts/cluster-down.sh [--keep-cluster]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/cluster/lib.sh"

RELEASE=${OMNIKUBE_RELEASE:-omnikube}
SYSTEM_NS=${OMNIKUBE_SYSTEM_NAMESPACE:-omnikube-system}
DEMO_NS=${OMNIKUBE_DEMO_NAMESPACE:-omnikube-demo}
keep_cluster=0
case ${1:-} in
  --keep-cluster) keep_cluster=1 ;;
  "") ;;
  *) die "unknown argument: $1" ;;
esac
export KUBECONFIG=$KUBECONFIG_PATH

if apiserver_ready; then
  if "$KUBECTL" get namespace "$DEMO_NS" >/dev/null 2>&1; then
    log "deleting the OmniDeployments in $DEMO_NS"
    "$KUBECTL" delete omni --all -n "$DEMO_NS" --wait --timeout=2m >/dev/null || true
    "$KUBECTL" delete namespace "$DEMO_NS" --wait=false >/dev/null || true
  fi
  if "$HELM" status "$RELEASE" -n "$SYSTEM_NS" >/dev/null 2>&1; then
    log "helm uninstall $RELEASE"
    "$HELM" uninstall "$RELEASE" -n "$SYSTEM_NS" --wait --timeout 2m >/dev/null
  fi
fi
# Test sessions register a lease named after their pid; never pull the cluster from under one.
live_users() {
  local lease pid
  for lease in "$CLUSTER_DIR"/users/*; do
    [ -e "$lease" ] || continue
    pid=${lease##*/}; pid=${pid%%-*}
    [ -d "/proc/$pid" ] && echo "$pid"
  done
}
if [ "$keep_cluster" = 0 ]; then
  if [ -n "$(live_users)" ]; then
    log "test sessions ($(live_users | tr '\n' ' ')) still use the cluster: leaving it up"
  else
    bash "$repo/scripts/cluster/down.sh"
  fi
fi
log "Omnikube is down"
