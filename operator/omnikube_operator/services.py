"""Services: a headless one for the workers (stable DNS per pod), and the gateway's (type from spec)."""

from __future__ import annotations

from typing import Any

from omnikube import labels

from . import gateway, pods
from .context import Owner


def build_workers_service(owner: Owner) -> dict[str, Any]:
    return owner.adopt({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(owner.workers_service, labels.COMPONENT_WORKER),
        "spec": {
            "clusterIP": "None",
            "selector": owner.selector(labels.COMPONENT_WORKER),
            # Each pod's own port (base + index) is found through the named container port.
            "ports": [{"name": pods.PORT_NAME, "port": owner.spec.service.worker_base_port,
                       "targetPort": pods.PORT_NAME, "protocol": "TCP"}],
        },
    })


def build_gateway_service(owner: Owner) -> dict[str, Any]:
    spec = owner.spec
    port: dict[str, Any] = {"name": gateway.PORT_NAME, "port": spec.service.gateway_port,
                            "targetPort": gateway.PORT_NAME, "protocol": "TCP"}
    if spec.gateway.node_port and spec.gateway.service_type != "ClusterIP":
        port["nodePort"] = spec.gateway.node_port
    return owner.adopt({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(owner.gateway, labels.COMPONENT_GATEWAY),
        "spec": {
            "type": spec.gateway.service_type,
            "selector": owner.selector(labels.COMPONENT_GATEWAY),
            "ports": [port],
        },
    })


def gateway_endpoint(owner: Owner, service: dict[str, Any] | None) -> str:
    """Where clients connect: the load balancer's address when there is one, else the DNS name."""
    scheme = "http" if owner.spec.gateway.http else "https"
    port = owner.spec.service.gateway_port
    ingress = ((service or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    if ingress:
        host = ingress[0].get("ip") or ingress[0].get("hostname")
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{owner.gateway}.{owner.namespace}.svc:{port}"
