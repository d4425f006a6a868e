# The two commands a newcomer needs:
#   make run    start Omnikube locally
#   make test   install everything this machine lacks, then run every test
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test run stop crd bench

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

run: setup
	bash scripts/run-local.sh

stop:
	bash scripts/stop-local.sh

crd:
	$(VENV)/bin/omnikube-crd --write

bench: setup
	$(PY) -m bench
