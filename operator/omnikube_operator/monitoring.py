"""Prometheus Operator objects: a ServiceMonitor for the gateway and a PodMonitor for the workers.

Made only when the cluster serves monitoring.coreos.com; otherwise the reconcile leaves a status
note instead of failing.
"""

from __future__ import annotations

from typing import Any

from omnikube import labels

from . import gateway, pods
from .context import GATEWAY_METRICS_PATH, Owner

MONITORING_API = "monitoring.coreos.com/v1"


def _metadata(owner: Owner, name: str, component: str) -> dict[str, Any]:
    meta = owner.metadata(name, component)
    meta["labels"] = {**owner.spec.monitoring.labels, **meta["labels"]}
    return meta


def build_service_monitor(owner: Owner) -> dict[str, Any] | None:
    monitoring = owner.spec.monitoring
    if not monitoring.service_monitor:
        return None
    return owner.adopt({
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": _metadata(owner, owner.gateway, labels.COMPONENT_GATEWAY),
        "spec": {
            "selector": {"matchLabels": owner.selector(labels.COMPONENT_GATEWAY)},
            "endpoints": [{"port": gateway.PORT_NAME, "path": GATEWAY_METRICS_PATH, "interval": monitoring.interval,
                           "scheme": "http" if owner.spec.gateway.http else "https"}],
        },
    })


def build_pod_monitor(owner: Owner) -> dict[str, Any] | None:
    monitoring = owner.spec.monitoring
    if not monitoring.pod_monitor:
        return None
    return owner.adopt({
        "apiVersion": MONITORING_API,
        "kind": "PodMonitor",
        "metadata": _metadata(owner, owner.workers_service, labels.COMPONENT_WORKER),
        "spec": {
            "selector": {"matchLabels": owner.selector(labels.COMPONENT_WORKER)},
            "podMetricsEndpoints": [{"port": pods.PORT_NAME, "path": GATEWAY_METRICS_PATH, "interval": monitoring.interval}],
        },
    })
