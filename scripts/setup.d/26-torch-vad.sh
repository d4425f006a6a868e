#!/usr/bin/env bash
# The Silero VAD model for the half-duplex tests: the silero-vad package (as pinned in the `worker`
# extra) ships it, but requires torch to install, so it comes after the CPU torch of 25-torch-cpu.sh
# (installed before torch, pip would pull a GPU build of torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('silero_vad') is None)"; then
  exit 0
fi
spec=$("$VENV/bin/python" - <<'PY'
import tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["worker"]
print(next(r for r in extra if r.startswith("silero-vad")))
PY
)
"$VENV/bin/pip" install --quiet "$spec"
