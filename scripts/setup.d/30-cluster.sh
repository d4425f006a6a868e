#!/usr/bin/env bash
# The local Kubernetes cluster's parts (Debian packages, Kubernetes v1.20.2 built from Debian's
# source package, kubectl and helm). Cached under ~/.cache/omnikube/: seconds when already done.
set -euo pipefail
exec bash "$(dirname "$0")/../cluster/install.sh"
