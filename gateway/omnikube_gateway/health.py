"""Health probes of workers' `/health`, feeding the registry.

Each worker gets its own small loop: a healthy worker is probed every `interval`, an unhealthy or
never-seen one every `fast_interval`, so a worker that failed a connection (marked unhealthy at
once by the proxy) is re-admitted within a fraction of a second of coming back. A new worker from
discovery is probed immediately. Probes use the app's one shared httpx client.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from .registry import Worker, WorkerRegistry

log = logging.getLogger(__name__)


class HealthProber:
    def __init__(self, registry: WorkerRegistry, client: httpx.AsyncClient, *, interval: float, fast_interval: float, timeout: float):
        self.registry = registry
        self.client = client
        self.interval = interval
        self.fast_interval = fast_interval
        self.timeout = timeout
        self._tasks: dict[str, asyncio.Task] = {}
        self._kicks: dict[str, asyncio.Event] = {}
        self._running = False

    def start(self) -> None:
        self._running = True
        for worker in self.registry:
            self.watch(worker)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def watch(self, worker: Worker) -> None:
        """Start probing a worker (idempotent); a known worker is probed again right away."""
        if not self._running:
            return
        task = self._tasks.get(worker.worker_id)
        if task is not None and not task.done():
            self._kicks[worker.worker_id].set()
            return
        self._kicks[worker.worker_id] = asyncio.Event()
        self._tasks[worker.worker_id] = asyncio.create_task(self._loop(worker.worker_id), name=f"health-{worker.worker_id}")

    async def probe(self, worker: Worker) -> None:
        sent_at = time.monotonic()
        try:
            response = await self.client.get(f"{worker.http_url}/health", timeout=self.timeout)
            if response.status_code != 200:
                self.registry.apply_probe(worker.worker_id, sent_at, {"worker_status": "error"})
                return
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError("health body is not an object")
            self.registry.apply_probe(worker.worker_id, sent_at, body)
        except (httpx.HTTPError, ValueError) as exc:
            self.registry.apply_probe(worker.worker_id, sent_at, None, error=f"{type(exc).__name__}: {exc}")

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(w) for w in self.registry))

    async def _loop(self, worker_id: str) -> None:
        kick = self._kicks[worker_id]
        while True:
            worker = self.registry.get(worker_id)
            if worker is None:
                self._tasks.pop(worker_id, None)
                self._kicks.pop(worker_id, None)
                return
            await self.probe(worker)
            delay = self.interval if worker.healthy else self.fast_interval
            kick.clear()
            try:
                await asyncio.wait_for(kick.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
