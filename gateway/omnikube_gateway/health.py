"""Health probes of workers' `/health`, feeding the registry.

Each worker gets its own small loop: a healthy worker is probed every `interval`; an unhealthy or
never-seen one, or one busy with a session that is not this gateway's (another replica's), every
`fast_interval`, so a worker that failed a connection (marked unhealthy at once by the proxy) is
re-admitted, and a worker another replica held is handed out, within a fraction of a second of
becoming free. A new worker from discovery is probed immediately.

The body is read through the worker's own `WorkerHealthResponse`, so a field renamed on one side
fails the probe loudly instead of reading as a default. Probes are kept cheap for hundreds of
workers: each worker's own keep-alive client (`upstream`), so a probe is one request on an open
connection; sleeps jittered by +-20 % so the loops do not fire in step. A refused connection or an error answer takes the worker offline at once, but a
probe that merely times out does so only after `TIMEOUTS_TO_OFFLINE` in a row (on a loaded
machine a single slow answer says little about the worker).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import httpx
from pydantic import ValidationError

from omnikube.protocol import WorkerHealthResponse, WorkerStatus

from .registry import Worker, WorkerRegistry
from .upstream import WorkerClients

log = logging.getLogger(__name__)

TIMEOUTS_TO_OFFLINE = 2
JITTER = 0.2


class HealthProber:
    def __init__(self, registry: WorkerRegistry, clients: WorkerClients, *, interval: float, fast_interval: float, timeout: float):
        self.registry = registry
        self.clients = clients
        self.interval = interval
        self.fast_interval = fast_interval
        self.timeout = timeout
        self._tasks: dict[str, asyncio.Task] = {}
        self._kicks: dict[str, asyncio.Event] = {}
        self._timeouts: dict[str, int] = {}
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
        client = self.clients.get(worker.worker_id, worker.http_url)
        try:
            response = await client.get(f"{worker.http_url}/health", timeout=self.timeout)
            self._timeouts.pop(worker.worker_id, None)
            if response.status_code != 200:
                self.registry.apply_probe(worker.worker_id, sent_at, None, error=f"/health answered HTTP {response.status_code}",
                                          status=WorkerStatus.error.value)
                return
            self.registry.apply_probe(worker.worker_id, sent_at, WorkerHealthResponse.model_validate_json(response.content))
        except httpx.TimeoutException as exc:
            count = self._timeouts[worker.worker_id] = self._timeouts.get(worker.worker_id, 0) + 1
            if count >= TIMEOUTS_TO_OFFLINE or not worker.healthy:
                self.registry.apply_probe(worker.worker_id, sent_at, None, error=f"{type(exc).__name__}: {exc}")
        except (httpx.HTTPError, ValueError, ValidationError) as exc:
            self._timeouts.pop(worker.worker_id, None)
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
                self._timeouts.pop(worker_id, None)
                return
            await self.probe(worker)
            suspect = not worker.healthy or worker_id in self._timeouts or worker.taken_elsewhere
            delay = (self.fast_interval if suspect else self.interval) * random.uniform(1 - JITTER, 1 + JITTER)
            kick.clear()
            try:
                await asyncio.wait_for(kick.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
