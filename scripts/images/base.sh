#!/usr/bin/env bash
# The local Debian base images the Dockerfiles build FROM where public images cannot be pulled.
#
#   scripts/images/base.sh rootfs     make the cached root filesystem tarballs (no docker needed)
#   scripts/images/base.sh import     rootfs, then `docker import` them where DOCKER_HOST points,
#                                     unless an image with the same content key is already there
#
# Two tarballs, keyed by suite and package lists under $IMAGES_CACHE: `base` (debootstrap minbase
# + Python) and `base-media` (the same + FFmpeg, for the worker). Nothing from the host goes in:
# no certificates, no resolver config, no apt lists.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

key=$(base_key)
base_tar="$IMAGES_CACHE/base-$DEBIAN_SUITE-$key.tar"
media_tar="$IMAGES_CACHE/base-media-$DEBIAN_SUITE-$key.tar"

scrub_rootfs() {
  local dir=$1
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/var/log/* "$dir"/tmp/* "$dir"/root/.cache
  # The container runtime provides these at run time; the host's must not leak into the image.
  : >"$dir/etc/resolv.conf"
  : >"$dir/etc/hostname"
}

pack() {
  local dir=$1 out=$2
  tar --numeric-owner --sort=name --mtime=@0 -C "$dir" -cf "$out.partial" . && mv "$out.partial" "$out"
}

make_rootfs() {
  [ -f "$base_tar" ] && [ -f "$media_tar" ] && return 0
  [ "$(id -u)" = 0 ] || idie "debootstrap needs root"
  command -v debootstrap >/dev/null || idie "debootstrap is missing (scripts/setup.d/60-images.sh installs it)"
  mkdir -p "$IMAGES_CACHE"
  local work
  work=$(mktemp -d "$IMAGES_CACHE/rootfs.XXXXXX")
  # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
  trap "umount '$work/rootfs/proc' 2>/dev/null || true; rm -rf '$work'" EXIT
  ilog "debootstrap $DEBIAN_SUITE minbase + $BASE_PACKAGES (about 90 s, once)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$DEBIAN_SUITE" "$work/rootfs" "$DEBIAN_MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; idie "debootstrap failed"; }
  scrub_rootfs "$work/rootfs"
  pack "$work/rootfs" "$base_tar"

  ilog "adding $MEDIA_PACKAGES for the worker base (about 60 s, once)"
  cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf"
  mount -t proc proc "$work/rootfs/proc"
  # A policy that forbids service starts: no daemon may run inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$work/rootfs/usr/sbin/policy-rc.d"
  chmod +x "$work/rootfs/usr/sbin/policy-rc.d"
  DEBIAN_FRONTEND=noninteractive chroot "$work/rootfs" sh -c \
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends $(tr ',' ' ' <<<"$MEDIA_PACKAGES") && apt-get clean" \
    >"$work/media.log" 2>&1 || { tail -20 "$work/media.log" >&2; idie "installing $MEDIA_PACKAGES failed"; }
  umount "$work/rootfs/proc"
  rm -f "$work/rootfs/usr/sbin/policy-rc.d"
  scrub_rootfs "$work/rootfs"
  pack "$work/rootfs" "$media_tar"
  # Older keys are dead weight (hundreds of MB each).
  find "$IMAGES_CACHE" -maxdepth 1 -name 'base-*.tar' ! -name "*-$key.tar" -delete
  ilog "rootfs ready: $base_tar, $media_tar"
}

import_one() {
  local tar=$1 name=$2 have
  have=$(docker image inspect -f '{{ index .Config.Labels "dev.omnikube.base-key" }}' "$name" 2>/dev/null || true)
  [ "$have" = "$key" ] && return 0
  ilog "docker import $name"
  docker import \
    --change "LABEL dev.omnikube.base-key=$key" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "$tar" "$name" >/dev/null
}

case ${1:-import} in
  rootfs) make_rootfs ;;
  import)
    make_rootfs
    import_one "$base_tar" "$BASE_IMAGE_LOCAL"
    import_one "$media_tar" "$MEDIA_IMAGE_LOCAL"
    ;;
  *) idie "usage: $0 rootfs|import" ;;
esac
