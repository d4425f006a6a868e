"""How a worker pod becomes an address, and whether a worker is busy: the one rule both the operator
and the gateway follow.

A worker pod's host is its `status.podIP`; its port is the `omnikube.labels.WORKER_PORT` annotation,
else `worker_base_port + worker-index label` (the rule outside Kubernetes too). Whether a worker is
busy is what the worker itself says on `/health` (`worker_status`, read through
`omnikube.protocol.WorkerStatus.busy`): the worker is the one place that knows, whichever gateway
replica gave it its session, so neither the operator nor the gateway asks anyone else.
"""

from __future__ import annotations

from typing import Any

from omnikube import labels
from omnikube.protocol import WorkerStatus


def host_port(host: str, port: int) -> str:
    """`host:port` as a URL authority: an IPv6 literal goes in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def base_url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://{host_port(host, port)}"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def pod_port(pod: dict[str, Any], base_port: int | None = None) -> int | None:
    """The worker's port: the annotation, else `base_port` + its index (None if neither is known)."""
    meta = pod.get("metadata") or {}
    port = _int((meta.get("annotations") or {}).get(labels.WORKER_PORT))
    if port is not None or base_port is None:
        return port
    return base_port + (_int((meta.get("labels") or {}).get(labels.WORKER_INDEX)) or 0)


def pod_address(pod: dict[str, Any], base_port: int | None = None) -> tuple[str, int] | None:
    """(host, port) of a worker pod, None while it has no IP or no known port."""
    ip = (pod.get("status") or {}).get("podIP")
    port = pod_port(pod, base_port)
    if not ip or port is None:
        return None
    return ip, port


def pod_url(pod: dict[str, Any], base_port: int | None = None) -> str | None:
    address = pod_address(pod, base_port)
    return base_url(*address) if address else None


def is_busy(worker_status: str | None) -> bool:
    """Busy, or unknown (no answer, an unknown word): never treat what cannot be seen as free."""
    if worker_status is None:
        return True
    try:
        return WorkerStatus(worker_status).busy
    except ValueError:
        return True
