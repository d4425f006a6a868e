"""Label and annotation names: the one contract between operator, gateway and worker pods.

The operator writes these onto every child; the gateway's discovery selects and reads worker pods by
them. Change a name here and both sides change together.
"""

from __future__ import annotations

GROUP = "omnikube.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OmniDeployment"
PLURAL = "omnideployments"
SINGULAR = "omnideployment"
SHORT_NAMES = ["omni"]

# Recommended Kubernetes labels.
NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "app.kubernetes.io/managed-by"

APP_NAME = "omnikube"
MANAGER = "omnikube-operator"

COMPONENT_WORKER = "worker"
COMPONENT_GATEWAY = "gateway"
COMPONENT_MODEL_DOWNLOAD = "model-download"

# Omnikube's own labels.
DEPLOYMENT = f"{GROUP}/deployment"          # name of the owning OmniDeployment
WORKER_INDEX = f"{GROUP}/worker-index"      # "0", "1", ...: stable per-GPU index of a worker pod
TEMPLATE_HASH = f"{GROUP}/template-hash"    # hash of the worker pod template; a change means roll

# Annotations.
DRAIN = f"{GROUP}/drain"                    # "true": gateway sends this worker no new work
DRAIN_SINCE = f"{GROUP}/drain-since"        # RFC 3339 time the drain started
WORKER_PORT = f"{GROUP}/worker-port"        # port the worker listens on inside its pod


def common_labels(deployment: str, component: str) -> dict[str, str]:
    """Labels every child of one OmniDeployment carries."""
    return {
        NAME: APP_NAME,
        INSTANCE: deployment,
        COMPONENT: component,
        PART_OF: APP_NAME,
        MANAGED_BY: MANAGER,
        DEPLOYMENT: deployment,
    }


def worker_selector(deployment: str) -> str:
    """Label selector (string form) for the worker pods of one OmniDeployment."""
    return f"{DEPLOYMENT}={deployment},{COMPONENT}={COMPONENT_WORKER}"
