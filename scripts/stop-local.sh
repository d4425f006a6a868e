#!/usr/bin/env bash
# Stop exactly the processes scripts/run-local.sh started (listed in tmp/omnikube-local.pids),
# and nothing else: a PID whose command line is no longer an Omnikube process is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${OMNIKUBE_RUN_DIR:-tmp}
PIDS="$RUN/omnikube-local.pids"
if [ ! -s "$PIDS" ]; then
  echo "Nothing to stop ($PIDS is empty or missing)."
  exit 0
fi
ours() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q 'omnikube'; }
# Gateway first (listed last), so that no new work reaches workers that are stopping.
tac "$PIDS" | while read -r pid name; do
  if kill -0 "$pid" 2>/dev/null && ours "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    echo "stopped $name (PID $pid)"
  else
    echo "$name (PID $pid) was not running"
  fi
  rm -f "$RUN/$name.pid"
done
: > "$PIDS"
