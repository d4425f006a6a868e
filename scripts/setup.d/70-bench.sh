#!/usr/bin/env bash
# Tools only the benchmarks use (`make bench`): nginx as the reverse-proxy floor and wrk as the
# HTTP load generator. Neither runs as a service: the benchmark starts its own nginx on loopback.
set -euo pipefail
if command -v nginx >/dev/null && command -v wrk >/dev/null; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the package's post-install from starting a system nginx on port 80 (only when no policy
# exists already; ours is removed again afterwards).
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  added_policy=1
fi
trap '[ "$added_policy" = 1 ] && rm -f "$policy"' EXIT
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! apt-cache show wrk >/dev/null 2>&1; then
  apt_get update -qq
fi
apt_get install -y -qq --no-install-recommends nginx-light wrk >/dev/null
