#!/usr/bin/env bash
# Build the local images into the docker daemon at $DOCKER_HOST (the local node's dockerd:
# unix://$HOME/.cache/omnikube/cluster/docker/docker.sock): the gateway/operator image and the CPU
# variant of the worker image (simulated backend), both from the same Dockerfiles the GPU images
# use, on the local debootstrap bases.
#
#   DOCKER_HOST=unix://... scripts/images/build.sh [--tag TAG]     (default tag: dev)
#
# Warm (bases imported, third-party wheels cached, layers cached) it only rebuilds the omnikube
# wheel and the layers above it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

while [ $# -gt 0 ]; do
  case $1 in
    --tag) IMAGE_TAG=$2; GATEWAY_IMAGE=omnikube/gateway:$2; WORKER_IMAGE=omnikube/worker:$2; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) idie "unknown argument: $1" ;;
  esac
  shift
done
[ -n "${DOCKER_HOST:-}" ] || idie "set DOCKER_HOST to the node's dockerd (see scripts/cluster/lib.sh: DOCKER_SOCK)"
command -v docker >/dev/null || idie "docker CLI missing (scripts/cluster/install.sh installs docker.io)"

# One build at a time on this machine (test sessions and cluster-up.sh may overlap).
mkdir -p "$IMAGES_CACHE"
exec 8>"$IMAGES_CACHE/.build.lock"
flock 8

started=$SECONDS
bash "$(dirname "$0")/base.sh" import
wheelhouse() {  # prints the wheelhouse's path relative to the build context
  local path
  path=$(bash "$(dirname "$0")/wheelhouse.sh" "$@" 2> >(grep -v -e "Location 'file:" -e '^ *$' >&2))
  echo "${path#"$IMAGES_REPO_ROOT"/}"
}

build() {
  local dockerfile=$1 image=$2 base=$3 context_path=$4
  ilog "docker build $image ($dockerfile FROM $base)"
  docker build --quiet -f "$IMAGES_REPO_ROOT/$dockerfile" -t "$image" \
    --build-arg "BASE_IMAGE=$base" --build-arg "WHEELHOUSE=$context_path" \
    --label dev.omnikube.local-build=true \
    "$IMAGES_REPO_ROOT" >/dev/null
}
build Dockerfile.gateway "$GATEWAY_IMAGE" "$BASE_IMAGE_LOCAL" "$(wheelhouse)"
# The simulated worker serves half duplex too: its Silero VAD runs on onnxruntime, without torch.
build Dockerfile.worker "$WORKER_IMAGE" "$MEDIA_IMAGE_LOCAL" "$(wheelhouse --extras vad)"
# Dangling layers of earlier builds would pile up on the node's disk.
docker image prune --force --filter "label=dev.omnikube.local-build=true" >/dev/null || true
ilog "images ready in $((SECONDS - started)) s: $GATEWAY_IMAGE, $WORKER_IMAGE"
