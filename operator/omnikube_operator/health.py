"""What the workers and the gateway say right now, asked over HTTP at each pod's own address.

Two facts, each from the one place that knows it:
- *Who is busy* comes from each worker's `/health` (`worker_status`): the worker holds the session,
  whichever gateway replica sent it, so its word is the truth. The gateway's health prober reads the
  same endpoint through the same rule (`omnikube.workers`). The operator uses it to pick idle
  workers first and to wait for a drained worker's session to end. An unanswered probe gives None,
  which counts as busy: never cut what cannot be seen.
- *How much is waiting* comes from the gateway's `/metrics` (no API key needed): its queue length
  and the queue wait it estimates for a new request of each task type, the ETA it tells clients.
  Summed (queue) and maxed (wait) over the ready gateway replicas.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from omnikube import workers
from omnikube.metric_names import GATEWAY_ETA_SECONDS, GATEWAY_QUEUE_LENGTH
from omnikube.protocol import WorkerHealthResponse

PROBE_TIMEOUT_S = 2.0

# name -> worker_status (None when the probe failed); injectable for tests and other transports.
Probe = Callable[[list[dict[str, Any]]], dict[str, str | None]]


@dataclass(frozen=True)
class Load:
    """Demand as the gateway measures it."""

    queue_length: int
    queue_wait_s: float  # the longest ETA a new request of any task type would be told now
    gateways: int        # replicas that answered


def _get(url: str) -> httpx.Response | None:
    try:
        response = httpx.get(url, timeout=PROBE_TIMEOUT_S, verify=False)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return response


def probe_one(pod: dict[str, Any]) -> str | None:
    """The worker's `worker_status`, read through its own `WorkerHealthResponse` (as the gateway's
    prober reads it); None when it did not answer or answered something else."""
    base = workers.pod_url(pod)
    response = _get(f"{base}/health") if base else None
    if response is None:
        return None
    try:
        return WorkerHealthResponse.model_validate_json(response.content).worker_status.value
    except ValidationError:
        return None


def probe_workers(pods: list[dict[str, Any]]) -> dict[str, str | None]:
    """worker_status of every pod, probed in parallel."""
    if not pods:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(pods))) as pool:
        results = list(pool.map(probe_one, pods))
    return {pod["metadata"]["name"]: status for pod, status in zip(pods, results)}


def parse_load(text: str) -> tuple[int, float] | None:
    """(queue length, longest ETA) from one gateway's Prometheus text, None if it has neither."""
    queue, waits = None, []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == GATEWAY_QUEUE_LENGTH:
                queue = int(sample.value)
            elif sample.name == GATEWAY_ETA_SECONDS:
                waits.append(float(sample.value))
    if queue is None:
        return None
    return queue, max(waits, default=0.0)


def gateway_load(pods: Iterable[dict[str, Any]], port: int, https: bool) -> Load | None:
    """Queue length and wait across the ready gateway pods, None if none answered."""
    queue, wait, answered = 0, 0.0, 0
    scheme = "https" if https else "http"
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        response = _get(f"{workers.base_url(ip, port, scheme)}/metrics")
        try:
            parsed = parse_load(response.text) if response else None
        except ValueError:
            parsed = None
        if parsed is not None:
            queue, wait, answered = queue + parsed[0], max(wait, parsed[1]), answered + 1
    return Load(queue, wait, answered) if answered else None
