#!/usr/bin/env bash
# Make the Debian 12 base image omnikube/debian-base:bookworm on the local node's dockerd, once:
# debootstrap (minbase + python3 and venv), cached as a tarball under ~/.cache/omnikube/images/ so
# that a re-import after `down.sh --purge` takes seconds. Needs the node up (`up.sh --node`).
#
#   scripts/cluster/base-image.sh [--force]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

BASE_IMAGE=${BASE_IMAGE:-omnikube/debian-base:bookworm}
BASE_INCLUDE=${BASE_INCLUDE:-python3,python3-venv,ca-certificates}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball="$OMNIKUBE_CACHE/images/debian-bookworm-minbase-$(echo "$BASE_INCLUDE" | sha256sum | cut -c1-8).tar"

[ "${1:-}" = --force ] && rm -f "$tarball"
proc_alive dockerd || die "the node's dockerd is not running: start it with scripts/cluster/up.sh --node"
if [ "${1:-}" != --force ] && $DOCKER image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "$BASE_IMAGE already present"
  exit 0
fi

if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null || bash "$here/install.sh"
  log "debootstrap bookworm (minbase + $BASE_INCLUDE): about a minute"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include="$BASE_INCLUDE" bookworm "$root" "$DEBIAN_MIRROR" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  mkdir -p "$(dirname "$tarball")"
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
log "importing $BASE_IMAGE"
$DOCKER import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$BASE_IMAGE" >/dev/null
log "$BASE_IMAGE ready on $DOCKER_SOCK"
