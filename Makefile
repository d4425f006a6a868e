# The two commands a newcomer needs:
#   make run    start Omnikube locally (simulated workers when there is no GPU)
#   make test   install everything this machine lacks, then run every test
# and the path users take, on a real local Kubernetes cluster:
#   make cluster-up / make cluster-down
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test run stop cluster-up cluster-down crd bench

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

run:
	bash scripts/setup.sh python
	bash scripts/run-local.sh

stop:
	bash scripts/stop-local.sh

cluster-up: setup
	bash scripts/cluster-up.sh

cluster-down:
	bash scripts/cluster-down.sh

crd:
	$(VENV)/bin/omnikube-crd --write

bench: setup
	$(PY) -m bench
