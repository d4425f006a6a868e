#!/usr/bin/env bash
# Install what the project needs on a fresh Debian 12 machine; every step is idempotent and cached,
# so a second run takes seconds. Steps live in scripts/setup.d/, run in name order.
#
#   scripts/setup.sh              every step (what `make test` needs)
#   scripts/setup.sh python       only the steps whose names contain one of the words given
set -euo pipefail
cd "$(dirname "$0")/.."
for step in scripts/setup.d/*.sh; do
  name=${step##*/}
  if [ $# -gt 0 ]; then
    wanted=0
    for word in "$@"; do [[ $name == *"$word"* ]] && wanted=1; done
    [ $wanted = 1 ] || continue
  fi
  echo "== setup: $name"
  bash "$step"
done
