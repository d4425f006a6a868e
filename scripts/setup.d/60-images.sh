#!/usr/bin/env bash
# What shipping needs beyond the cluster: Prometheus and promtool (the dashboard and alert tests),
# debootstrap, and the cached Debian root filesystems the local images are built FROM
# (scripts/images/base.sh). Seconds when already done.
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(prometheus debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The Debian prometheus package would start a system-wide server: tests start their own.
  policy=/usr/sbin/policy-rc.d had_policy=1
  [ -e "$policy" ] || { had_policy=0; printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
  [ "$had_policy" = 1 ] || rm -f "$policy"
fi

bash scripts/images/base.sh rootfs
