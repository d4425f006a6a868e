#!/usr/bin/env bash
# Start the local Kubernetes v1.20 cluster: etcd, kube-apiserver (TLS, RBAC, static admin token,
# service-account keys), kube-controller-manager and kube-scheduler; with --node also dockerd,
# a kubelet (dockershim) and kube-proxy for one node that advertises N nvidia.com/gpu.
#
#   scripts/cluster/up.sh [--node] [--gpus N]      (N defaults to 4 with --node)
#
# Idempotent: whatever already runs is kept; a running control plane gains the node on --node.
# All state lives in $OMNIKUBE_CLUSTER_DIR (default ~/.cache/omnikube/cluster); every process is
# recorded by pid in pids/ and stopped by pid in down.sh. Prints the kubeconfig path last.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"
. "$here/pki.sh"
. "$here/guards.sh"

want_node=0
gpus=""
while [ $# -gt 0 ]; do
  case $1 in
    --node) want_node=1 ;;
    --gpus) gpus=$2; want_node=1; shift ;;
    --gpus=*) gpus=${1#*=}; want_node=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[ -n "$gpus" ] || gpus=${OMNIKUBE_NODE_GPUS:-4}
[[ $gpus =~ ^[0-9]+$ ]] || die "--gpus wants a whole number, got '$gpus'"

[ "$(id -u)" = 0 ] || die "the cluster needs root (dockerd, iptables, kubelet)"

ensure_binaries() {
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy pause; do
    [ -x "$K8S_BIN/$b" ] || { bash "$here/install.sh"; return; }
  done
  [ -x "$KUBECTL" ] || bash "$here/install.sh"
}

start_etcd() {
  proc_alive etcd && return 0
  log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
  # A fresh store each start: tests want an empty cluster, not the leftovers of the last one.
  rm -rf "$CLUSTER_DIR/etcd"
  start_proc etcd /usr/bin/etcd --name omnikube --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "omnikube=http://127.0.0.1:$ETCD_PEER_PORT" \
    --logger zap --log-level warn
  wait_for etcd 30 curl -fs "http://127.0.0.1:$ETCD_CLIENT_PORT/health" -o /dev/null
}

start_apiserver() {
  if proc_alive kube-apiserver; then
    wait_for kube-apiserver 180 apiserver_ready
    return 0
  fi
  log "starting kube-apiserver on $SERVER_URL (advertised to pods as $DOCKER_BRIDGE_IP)"
  # OwnerReferencesPermissionEnforcement (on in OpenShift and other hardened clusters): a client
  # that sets blockOwnerDeletion must be allowed to update the owner's finalizers; with it on here,
  # the tests prove the chart's RBAC grants the operator that.
  # Host clients use loopback; pods reach it through the service IP -> 172.17.0.1, served by the
  # socat relay the node adds (so adding a node never moves or restarts the API server).
  start_proc kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" --insecure-port 0 \
    --advertise-address "$DOCKER_BRIDGE_IP" \
    --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --token-auth-file "$PKI_DIR/tokens.csv" \
    --authorization-mode RBAC \
    --enable-admission-plugins OwnerReferencesPermissionEnforcement \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-key-file "$PKI_DIR/sa.pub" \
    --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --allow-privileged=true --profiling=false
  wait_for kube-apiserver 180 apiserver_ready
}

start_controllers() {
  if ! proc_alive kube-controller-manager; then
    log "starting kube-controller-manager"
    start_proc kube-controller-manager "$K8S_BIN/kube-controller-manager" \
      --kubeconfig "$KUBECONFIG_PATH" \
      --authentication-kubeconfig "$KUBECONFIG_PATH" --authorization-kubeconfig "$KUBECONFIG_PATH" \
      --leader-elect=false --bind-address 127.0.0.1 --port 0 --secure-port "$CONTROLLER_MANAGER_PORT" \
      --cert-dir "$CLUSTER_DIR/controller-manager" \
      --service-account-private-key-file "$PKI_DIR/sa.key" --root-ca-file "$PKI_DIR/ca.crt" \
      --use-service-account-credentials=false --cluster-name omnikube --profiling=false
  fi
  if ! proc_alive kube-scheduler; then
    log "starting kube-scheduler"
    start_proc kube-scheduler "$K8S_BIN/kube-scheduler" \
      --kubeconfig "$KUBECONFIG_PATH" \
      --authentication-kubeconfig "$KUBECONFIG_PATH" --authorization-kubeconfig "$KUBECONFIG_PATH" \
      --leader-elect=false --bind-address 127.0.0.1 --port 0 --secure-port "$SCHEDULER_PORT" \
      --cert-dir "$CLUSTER_DIR/scheduler" --profiling=false
  fi
}

docker_answers() { $DOCKER version >/dev/null 2>&1; }

# The exec root and the pid file are run-time state (on a real host a tmpfs that a reboot empties),
# but ours live in the cache. A dockerd killed with its containers (a session that ended, a machine
# that went away) leaves one containerd task per container in the exec root, and the next
# containerd cleans each dead shim up before it answers: at ~0.5 s apiece, a hundred of them outlast
# dockerd's 60 s wait for containerd and it gives up. Its pid file makes the next dockerd refuse to
# start if any process now holds that pid. Only called when our own pid file says dockerd is gone.
clear_stale_docker_state() {
  local docker_dir="$CLUSTER_DIR/docker"
  rm -f "$docker_dir/docker.pid"
  [ -d "$docker_dir/exec" ] || return 0
  unmount_under "$docker_dir/exec"
  rm -rf "$docker_dir/exec"
}

start_dockerd() {
  proc_alive dockerd && return 0
  clear_stale_docker_state
  log "starting dockerd on unix://$DOCKER_SOCK"
  mkdir -p "$CLUSTER_DIR/docker"
  cat >"$CLUSTER_DIR/docker/daemon.json" <<JSON
{
  "hosts": ["unix://$DOCKER_SOCK"],
  "data-root": "$CLUSTER_DIR/docker/root",
  "exec-root": "$CLUSTER_DIR/docker/exec",
  "pidfile": "$CLUSTER_DIR/docker/docker.pid",
  "runtimes": {"omnikube-runc": {"path": "$here/runc-oom-clamp"}},
  "default-runtime": "omnikube-runc",
  "userland-proxy": false,
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "log-opts": {"max-size": "20m", "max-file": "2"}
}
JSON
  # Image pulls would go to an outside registry: aim them at a closed local port so they fail fast.
  start_proc dockerd HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    /usr/sbin/dockerd --config-file "$CLUSTER_DIR/docker/daemon.json"
  wait_for dockerd 120 docker_answers || {
    tail -n 20 "$LOG_DIR/dockerd.log" >&2
    die "dockerd did not start (log: $LOG_DIR/dockerd.log)"
  }
}

# Images pods can use without any registry: the sandbox (pause) image and a static busybox, both
# FROM scratch (its wget crashes in a scratch image: use nc). Other images are `docker build`-ed onto this dockerd (see DOCKER_HOST in the docs).
ensure_node_images() {
  local tmp
  if ! $DOCKER image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
    log "importing $PAUSE_IMAGE (static pause binary, FROM scratch)"
    tar -C "$K8S_BIN" -c pause | $DOCKER import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
  fi
  if ! $DOCKER image inspect "$TOOLBOX_IMAGE" >/dev/null 2>&1; then
    log "importing $TOOLBOX_IMAGE (static busybox, FROM scratch)"
    tmp=$(mktemp -d)
    mkdir -p "$tmp/bin" "$tmp/tmp"
    cp /bin/busybox "$tmp/bin/busybox"
    for applet in sh cat echo env ls nc sleep true false printf httpd ip ifconfig nslookup hostname; do
      ln -s busybox "$tmp/bin/$applet"
    done
    tar -C "$tmp" -c . | $DOCKER import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$TOOLBOX_IMAGE" >/dev/null
    rm -rf "$tmp"
  fi
}

start_apiserver_relay() {
  proc_alive apiserver-relay && return 0
  log "relaying $DOCKER_BRIDGE_IP:$APISERVER_PORT (pods) to the API server"
  start_proc apiserver-relay /usr/bin/socat \
    "TCP-LISTEN:$APISERVER_PORT,bind=$DOCKER_BRIDGE_IP,reuseaddr,fork" "TCP:127.0.0.1:$APISERVER_PORT"
}

start_kubelet() {
  proc_alive kubelet && return 0
  log "starting kubelet for node $NODE_NAME"
  local dir="$CLUSTER_DIR/kubelet"
  mkdir -p "$dir"
  # No cluster DNS by default: hand pods a resolver that answers nothing instead of the host's.
  echo "nameserver 127.0.0.1" >"$CLUSTER_DIR/resolv.conf"
  cat >"$CLUSTER_DIR/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $DOCKER_BRIDGE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupDriver: cgroupfs
failSwapOn: false
resolvConf: $CLUSTER_DIR/resolv.conf
clusterDomain: cluster.local
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
  start_proc kubelet AWS_EC2_METADATA_DISABLED=true "$K8S_BIN/kubelet" \
    --kubeconfig "$KUBECONFIG_PATH" --config "$CLUSTER_DIR/kubelet-config.yaml" \
    --hostname-override "$NODE_NAME" --node-ip "$DOCKER_BRIDGE_IP" \
    --root-dir "$dir/root" --cert-dir "$dir/pki" \
    --container-runtime docker --docker-endpoint "unix://$DOCKER_SOCK" \
    --experimental-dockershim-root-directory "$dir/dockershim" \
    --container-runtime-endpoint "unix://$dir/dockershim.sock" \
    --image-service-endpoint "unix://$dir/dockershim.sock" \
    --pod-infra-container-image "$PAUSE_IMAGE" \
    --register-node=true
}

start_kube_proxy() {
  proc_alive kube-proxy && return 0
  log "starting kube-proxy (iptables mode)"
  start_proc kube-proxy "$K8S_BIN/kube-proxy" \
    --kubeconfig "$KUBECONFIG_PATH" --proxy-mode iptables --hostname-override "$NODE_NAME" \
    --cluster-cidr "$POD_CIDR" \
    --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 \
    --nodeport-addresses 127.0.0.0/8,172.17.0.0/16 \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0s \
    --conntrack-tcp-timeout-close-wait=0s
}

node_ready() {
  [ "$(kubectl_admin get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

node_untainted() {
  ! kubectl_admin get node "$NODE_NAME" -o 'jsonpath={.spec.taints[*].key}' 2>/dev/null \
    | grep -q node.kubernetes.io/not-ready
}

node_gpus_are() {
  [ "$(kubectl_admin get node "$NODE_NAME" \
    -o 'jsonpath={.status.allocatable.nvidia\.com/gpu}' 2>/dev/null)" = "${1:-}" ]
}

advertise_gpus() {
  local want=$gpus
  [ "$gpus" = 0 ] && want=""
  node_gpus_are "$want" && return 0
  log "node $NODE_NAME advertises $gpus nvidia.com/gpu"
  # Extended resources nobody's device plugin owns: a status patch of the capacity persists, and
  # the kubelet derives allocatable from it.
  local patch="[{\"op\":\"add\",\"path\":\"/status/capacity/nvidia.com~1gpu\",\"value\":\"$gpus\"}]"
  [ "$gpus" = 0 ] && patch='[{"op":"remove","path":"/status/capacity/nvidia.com~1gpu"}]'
  kubectl_admin patch node "$NODE_NAME" --subresource=status --type=json -p "$patch" >/dev/null
  wait_for "allocatable nvidia.com/gpu=$gpus" 60 node_gpus_are "$want"
}

start_node() {
  install_node_guards
  modprobe br_netfilter 2>/dev/null || true
  start_dockerd
  ensure_node_images
  start_apiserver_relay
  start_kubelet
  start_kube_proxy
  wait_for "node $NODE_NAME Ready" 120 node_ready
  # The node-lifecycle controller lifts the not-ready taint shortly after Ready.
  wait_for "not-ready taint lifted" 60 node_untainted
  advertise_gpus
}

main() {
  take_cluster_lock
  ensure_binaries
  mkdir -p "$CLUSTER_DIR"
  ensure_pki
  install_host_guards
  start_etcd
  start_apiserver
  start_controllers
  [ "$want_node" = 1 ] && start_node
  # Started or claimed by hand: the pytest fixtures must not stop it when their sessions end.
  [ "${OMNIKUBE_CLUSTER_BY_FIXTURE:-}" = 1 ] || rm -f "$CLUSTER_DIR/fixture-owned"
  log "cluster ready (${SECONDS}s); kubectl: $KUBECTL"
  echo "$KUBECONFIG_PATH"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main; fi
