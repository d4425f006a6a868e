#!/usr/bin/env bash
# Omnikube on a real local Kubernetes cluster, the way users install it, in one command:
# cluster + node (scripts/cluster/), the images (scripts/images/build.sh), `helm install` of the
# chart, and the simulated sample OmniDeployment (no GPU or weights needed; it says so in every
# answer). Leaves it running and prints the gateway URL and the kubectl context to use.
#
#   bash scripts/cluster-up.sh [--sample FILE] [--workers N]
#
# Idempotent: a second run upgrades what changed. Tear down with scripts/cluster-down.sh.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/scripts/cluster/lib.sh"

RELEASE=${OMNIKUBE_RELEASE:-omnikube}
SYSTEM_NS=${OMNIKUBE_SYSTEM_NAMESPACE:-omnikube-system}
DEMO_NS=${OMNIKUBE_DEMO_NAMESPACE:-omnikube-demo}
sample="$repo/manifests/samples/simulated.yaml"
workers=""
while [ $# -gt 0 ]; do
  case $1 in
    --sample) sample=$2; shift ;;
    --workers) workers=$2; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
started=$SECONDS
export KUBECONFIG=$KUBECONFIG_PATH

bash "$repo/scripts/cluster/up.sh" --node >/dev/null
# Started (or adopted) by hand now: the test fixtures never stop a cluster they did not start.
rm -f "$CLUSTER_DIR/fixture-owned"
DOCKER_HOST="unix://$DOCKER_SOCK" bash "$repo/scripts/images/build.sh"

log "helm upgrade --install $RELEASE in $SYSTEM_NS (operator watching $DEMO_NS)"
# The operator reconciles only the demo namespace, so test runs on the same cluster (each with
# its own operator in its own namespace) are left alone.
"$HELM" upgrade --install "$RELEASE" "$repo/charts/omnikube" --namespace "$SYSTEM_NS" --create-namespace \
  --set image.tag=dev --set image.pullPolicy=Never --set "operator.watchNamespaces={$DEMO_NS}" \
  --wait=watcher --timeout 5m >/dev/null

"$KUBECTL" get namespace "$DEMO_NS" >/dev/null 2>&1 || "$KUBECTL" create namespace "$DEMO_NS" >/dev/null
"$KUBECTL" apply -n "$DEMO_NS" -f "$sample" >/dev/null
name=$("$KUBECTL" apply -n "$DEMO_NS" -f "$sample" --dry-run=client -o jsonpath='{.metadata.name}')
if [ -n "$workers" ]; then
  "$KUBECTL" scale -n "$DEMO_NS" "omni/$name" --replicas="$workers" >/dev/null
fi
log "waiting for omni/$name in $DEMO_NS to be Ready"
"$KUBECTL" wait -n "$DEMO_NS" --for=condition=Ready "omni/$name" --timeout=5m >/dev/null

port=$("$KUBECTL" get -n "$DEMO_NS" "svc/$name-gateway" -o jsonpath='{.spec.ports[0].port}')
ip=$("$KUBECTL" get -n "$DEMO_NS" "svc/$name-gateway" -o jsonpath='{.spec.clusterIP}')
url="http://$ip:$port"
for _ in $(seq 1 60); do
  curl -fs -o /dev/null "$url/health" && break
  sleep 1
done
curl -fsS -o /dev/null "$url/health" || die "the gateway at $url does not answer"

cat <<DONE

Omnikube is up ($((SECONDS - started)) s): $("$KUBECTL" get -n "$DEMO_NS" "omni/$name" --no-headers 2>/dev/null | awk '{print $2" workers ready"}'), simulated backend.

  gateway      $url          (web UI, /api/chat, /ws/..., /v1/realtime, /metrics)
  kubectl      export KUBECONFIG=$KUBECONFIG_PATH   (context: $("$KUBECTL" config current-context))
               alias kubectl=$KUBECTL
  try          kubectl -n $DEMO_NS get omni,pods
               kubectl -n $DEMO_NS scale omni/$name --replicas=3
               curl -s $url/api/chat -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"hello"}]}'
  tear down    bash scripts/cluster-down.sh
DONE
