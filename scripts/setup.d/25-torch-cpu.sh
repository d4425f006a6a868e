#!/usr/bin/env bash
# CPU-only torch in the project venv, so the worker's minicpmo backend tests (attention choice,
# pt_path weight override on a small module) really run here and in CI. The GPU stack (the
# `worker` extra) is not installed: no GPU, no weights on these machines.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  exit 0
fi
# The package index these machines use serves the CPU wheel for this version.
"$VENV/bin/pip" install --quiet "torch==2.13.0"
