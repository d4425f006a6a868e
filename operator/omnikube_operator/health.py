"""What workers and the gateway are doing right now, asked over HTTP at the pod's own address.

A worker's `/health` says `worker_status` (idle, busy_chat, duplex_active, ...); the operator uses it
to pick idle workers first and to wait for a drained worker's session to end. The address is the
pod's `status.podIP` and its `omnikube.dev/worker-port` annotation, the same rule the gateway's
discovery follows (tests point both at simulated workers on loopback). An unanswered probe gives
None, which the scaling planner treats as "maybe busy": it never cuts what it cannot see.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

import httpx

from omnikube import labels

PROBE_TIMEOUT_S = 2.0

# name -> worker_status (None when the probe failed); injectable for tests and other transports.
Probe = Callable[[list[dict[str, Any]]], dict[str, str | None]]


def worker_url(pod: dict[str, Any]) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    port = ((pod.get("metadata") or {}).get("annotations") or {}).get(labels.WORKER_PORT)
    if not ip or not port:
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}"


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(url, timeout=PROBE_TIMEOUT_S)
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def probe_one(pod: dict[str, Any]) -> str | None:
    base = worker_url(pod)
    if base is None:
        return None
    body = _get_json(f"{base}/health")
    status = body.get("worker_status") if body else None
    return status if isinstance(status, str) else None


def probe_workers(pods: list[dict[str, Any]]) -> dict[str, str | None]:
    """worker_status of every pod, probed in parallel."""
    if not pods:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(pods))) as pool:
        results = list(pool.map(probe_one, pods))
    return {pod["metadata"]["name"]: status for pod, status in zip(pods, results)}


def gateway_queue_length(pods: Iterable[dict[str, Any]], port: int, https: bool) -> int | None:
    """Requests waiting across the ready gateway pods (their `/status`), None if none answered."""
    total, answered = 0, False
    scheme = "https" if https else "http"
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            response = httpx.get(f"{scheme}://{ip}:{port}/status", timeout=PROBE_TIMEOUT_S, verify=False)
            length = response.json().get("queue_length") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            continue
        if isinstance(length, int):
            total, answered = total + length, True
    return total if answered else None
