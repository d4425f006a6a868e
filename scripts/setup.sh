#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian 12 machine; every step is idempotent and
# cached, so a second run takes seconds. Steps live in scripts/setup.d/, run in name order.
set -euo pipefail
cd "$(dirname "$0")/.."
for step in scripts/setup.d/*.sh; do
  echo "== setup: ${step##*/}"
  bash "$step"
done
