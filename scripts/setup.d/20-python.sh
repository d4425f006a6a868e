#!/usr/bin/env bash
# The project's virtual environment with the gateway, operator and test dependencies (not the
# heavy `worker` extra: the model stack is only needed on GPU machines).
set -euo pipefail
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e '.[test]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
