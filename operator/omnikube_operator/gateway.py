"""The gateway Deployment: the one address clients use, discovering worker pods through the API."""

from __future__ import annotations

from typing import Any

from omnikube import labels

from .configmap import config_hash
from .context import CONFIG_DIR, CONFIG_HASH, CONFIG_PATH, DATA_MOUNT_PATH, Owner
from .lockdown import lock_down
from .storage import data_mount, data_volume

GATEWAY_CONTAINER = "gateway"
PORT_NAME = "http"
CONFIG_VOLUME = "config"
AUTH_VOLUME = "api-keys"
AUTH_DIR = "/etc/omnikube/auth"
# A deleted pod leaves the Service's endpoints at once, but kube-proxy on every node takes a moment
# to drop it: the gateway keeps serving through this pause before it gets SIGTERM, so no new
# connection lands on a closed port.
PRE_STOP_PAUSE_S = 5
# After SIGTERM: time for live sessions to end with an error frame and requests to finish.
DRAIN_S = 25


def _command(owner: Owner) -> list[str]:
    spec = owner.spec
    command = [
        "omnikube-gateway", "--deployment", owner.name, "--namespace", owner.namespace,
        "--config", CONFIG_PATH, "--host", "0.0.0.0", "--port", str(spec.service.gateway_port),
    ]
    if spec.gateway.http:
        command.append("--http")
    if spec.auth.api_key_secret:
        command += ["--api-keys-file", f"{AUTH_DIR}/{spec.auth.api_key_secret.key}"]
    return command


def _volumes(owner: Owner) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes = [{"name": CONFIG_VOLUME, "configMap": {"name": owner.config_map}}, data_volume(owner)]
    mounts = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        data_mount(owner, DATA_MOUNT_PATH),
    ]
    secret = owner.spec.auth.api_key_secret
    if secret:
        volumes.append({"name": AUTH_VOLUME, "secret": {"secretName": secret.name}})
        mounts.append({"name": AUTH_VOLUME, "mountPath": AUTH_DIR, "readOnly": True})
    return volumes, mounts


def build_gateway_deployment(owner: Owner) -> dict[str, Any]:
    gateway = owner.spec.gateway
    volumes, mounts = _volumes(owner)
    scheme = "HTTP" if gateway.http else "HTTPS"
    alive = {"httpGet": {"path": "/health", "port": PORT_NAME, "scheme": scheme}, "periodSeconds": 15, "timeoutSeconds": 3,
             "failureThreshold": 4}
    # /readyz answers once discovery has listed the workers; probed every second so that a new
    # gateway joins the Service within about a second of listening.
    ready = {"httpGet": {"path": "/readyz", "port": PORT_NAME, "scheme": scheme}, "periodSeconds": 1, "timeoutSeconds": 1,
             "failureThreshold": 2}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": owner.gateway,
        "terminationGracePeriodSeconds": PRE_STOP_PAUSE_S + DRAIN_S,
        "enableServiceLinks": False,
        "containers": [{
            "name": GATEWAY_CONTAINER,
            "image": gateway.image,
            "imagePullPolicy": gateway.image_pull_policy,
            "command": _command(owner),
            "env": [{"name": "OMNIKUBE_CONFIG", "value": CONFIG_PATH}],
            "ports": [{"name": PORT_NAME, "containerPort": owner.spec.service.gateway_port, "protocol": "TCP"}],
            "resources": gateway.resources.model_dump(exclude_none=True),
            "volumeMounts": mounts,
            "readinessProbe": ready,
            "livenessProbe": alive,
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_PAUSE_S)]}}},
        }],
        "volumes": volumes,
        "nodeSelector": gateway.node_selector,
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in gateway.tolerations],
    }
    if gateway.affinity:
        pod_spec["affinity"] = gateway.affinity
    lock_down(pod_spec, cache_limit="1Gi")
    selector = owner.selector(labels.COMPONENT_GATEWAY)
    return owner.adopt({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(owner.gateway, labels.COMPONENT_GATEWAY),
        "spec": {
            "replicas": gateway.replicas,
            "selector": {"matchLabels": selector},
            # A config change brings the new gateway up before an old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                # A config change restarts the gateway so it reads the new file.
                "metadata": {"labels": owner.labels(labels.COMPONENT_GATEWAY), "annotations": {CONFIG_HASH: config_hash(owner)}},
                "spec": pod_spec,
            },
        },
    })


def build_gateway_pdb(owner: Owner, api_version: str) -> dict[str, Any]:
    """Voluntary evictions (node drains) take one gateway at a time; with two or more replicas the
    Service always has one left."""
    return owner.adopt({
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": owner.metadata(owner.gateway, labels.COMPONENT_GATEWAY),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": owner.selector(labels.COMPONENT_GATEWAY)}},
    })
