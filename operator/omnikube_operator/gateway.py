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
    probe = {"httpGet": {"path": "/health", "port": PORT_NAME, "scheme": "HTTP" if gateway.http else "HTTPS"},
             "periodSeconds": 5, "timeoutSeconds": 3}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": owner.gateway,
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
            "readinessProbe": {**probe, "failureThreshold": 2},
            "livenessProbe": {**probe, "periodSeconds": 15, "failureThreshold": 4},
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
            "template": {
                # A config change restarts the gateway so it reads the new file.
                "metadata": {"labels": owner.labels(labels.COMPONENT_GATEWAY), "annotations": {CONFIG_HASH: config_hash(owner)}},
                "spec": pod_spec,
            },
        },
    })
