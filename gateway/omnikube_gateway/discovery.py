"""Where workers come from: a static `--workers` list, or a watch on the worker pods of one
OmniDeployment through the Kubernetes API.

Kubernetes mode lists the pods matching the selector, then watches from that resourceVersion.
A pod is routable when it is Ready, has a podIP and no deletionTimestamp, and is not drained
(annotation `omnikube.labels.DRAIN` = "true"); the moment any of that stops being true, the
registry hears of it and no new work goes there (a drained worker keeps its running session).
A pod that stops matching the selector (relabelled) arrives as DELETED. Host and port follow
`omnikube.workers.pod_address`, the rule the operator uses too.

Failure handling: 410 Gone (the resourceVersion expired) relists at once; any other error (API
server restart, network) retries with exponential backoff up to 1 s, so the watch is back within
about a second of the API server returning (one refused connection a second costs an API server
nothing). The workers known so far stay in the registry meanwhile, so routing continues through
an API outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from omnikube import labels, workers

from . import metrics
from .kube import KubeAuth
from .registry import WorkerRegistry
from .settings import StaticWorker

log = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 240
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 1.0


def load_static(registry: WorkerRegistry, workers: list[StaticWorker]) -> None:
    for index, worker in enumerate(workers):
        registry.upsert(f"worker_{index}", worker.host, worker.port, index)


class _Expired(Exception):
    pass


class PodWatcher:
    def __init__(self, registry: WorkerRegistry, auth: KubeAuth, *, namespace: str, selector: str, base_port: int):
        self.registry = registry
        self.auth = auth
        self.namespace = namespace
        self.selector = selector
        self.base_port = base_port
        self.synced = asyncio.Event()  # set after the first successful list
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    def start(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or self.auth.client()
        self._task = asyncio.create_task(self._run(), name="pod-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        backoff = BACKOFF_START_S
        while True:
            try:
                version = await self._list()
                backoff = BACKOFF_START_S
                while True:
                    version = await self._watch(version)
                    metrics.WATCH_RESTARTS.labels("closed").inc()
            except asyncio.CancelledError:
                raise
            except _Expired:
                metrics.WATCH_RESTARTS.labels("expired").inc()
                log.info("pod watch expired (410 Gone); relisting")
            except Exception as exc:
                metrics.WATCH_RESTARTS.labels("error").inc()
                log.warning("pod watch failed (%s: %s); keeping %d known workers, retrying in %.1f s",
                            type(exc).__name__, exc, len(self.registry), backoff)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _list(self) -> str:
        response = await self._client.get(self.path, params={"labelSelector": self.selector}, headers=self.auth.headers())
        response.raise_for_status()
        body = response.json()
        seen = set()
        for pod in body.get("items") or []:
            name = self._apply(pod)
            if name:
                seen.add(name)
        self.registry.retain(seen)
        metrics.DISCOVERY_EVENTS_TOTAL.labels("relisted").inc()
        self.synced.set()
        return body["metadata"]["resourceVersion"]

    async def _watch(self, version: str) -> str:
        params = {
            "labelSelector": self.selector, "watch": "1", "resourceVersion": version,
            "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        timeout = httpx.Timeout(10.0, read=WATCH_TIMEOUT_S + 30)
        async with self._client.stream("GET", self.path, params=params, headers=self.auth.headers(), timeout=timeout) as response:
            if response.status_code == 410:
                raise _Expired()
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    metrics.DISCOVERY_EVENTS_TOTAL.labels("deleted").inc()
                    self.registry.remove(obj["metadata"]["name"])
                else:
                    metrics.DISCOVERY_EVENTS_TOTAL.labels("added" if kind == "ADDED" else "modified").inc()
                    self._apply(obj)
        return version

    def _apply(self, pod: dict[str, Any]) -> str | None:
        """Reflect one pod in the registry; returns its name if the registry knows it afterwards."""
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        name = meta["name"]
        pod_labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        address = workers.pod_address(pod, self.base_port)
        ready = address is not None and not meta.get("deletionTimestamp") and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        draining = annotations.get(labels.DRAIN) == "true"
        index = _int(pod_labels.get(labels.WORKER_INDEX), 0)
        known = self.registry.get(name)
        if address is None:  # an IP gone (pod stopping): keep the last one so its session can finish
            if known is None:
                return None
            address = (known.host, workers.pod_port(pod, self.base_port))
        self.registry.upsert(name, *address, index, ready=ready, draining=draining)
        return name


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
