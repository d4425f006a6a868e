"""The worker's state and its one-session-at-a-time admission.

Only `WorkerState` changes `worker_status` and `current_session_id`. A session holds a `Lease`
from admission until its cleanup is done. A newcomer waits (up to `busy_grace_s`, without polling)
for the running session to be freed before it is turned away: the gateway hands a worker to the
next client the moment the previous client's socket closes, which can be before this process has
even noticed that disconnect. The gateway's queue, not this wait, is what keeps clients apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from omnikube.protocol import WorkerStatus

from . import metrics
from .pace import GenerationPace

log = logging.getLogger("omnikube.worker")


class NotReady(Exception):
    """The model is not loaded (yet, or it failed)."""


class Busy(Exception):
    def __init__(self, status: WorkerStatus) -> None:
        super().__init__(f"Worker busy: {status.value}")
        self.status = status


class Lease:
    """One admitted session. `release` runs its cleanup, then frees the worker."""

    def __init__(self, state: "WorkerState", status: WorkerStatus, session_id: str | None) -> None:
        self._state = state
        self.status = status
        self.session_id = session_id
        self.started = time.monotonic()
        self.cleaning = False
        self.released = False

    def set_status(self, status: WorkerStatus) -> None:
        if not self.released:
            self._state._set_status(status)

    async def release(self, cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run `cleanup`, then free the worker. The cleanup is shielded: if the handler is cancelled
        meanwhile, the worker stays busy until the cleanup really ends (the model's caches are free)."""
        if self.released or self.cleaning:
            return
        self.cleaning = True
        if cleanup is None:
            self._done()
            return
        task = asyncio.ensure_future(cleanup())
        task.add_done_callback(self._cleanup_done)
        await asyncio.shield(task)

    def _cleanup_done(self, task: "asyncio.Future[None]") -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("session cleanup failed", exc_info=task.exception())
        self._done()

    def _done(self) -> None:
        if not self.released:
            self.released = True
            self._state._free(self)


class WorkerState:
    def __init__(self, busy_grace_s: float = 5.0) -> None:
        self.status = WorkerStatus.loading
        self.current_session_id: str | None = None
        self.total_requests = 0
        self._inference_ms_total = 0.0
        self.pace = GenerationPace()
        self.busy_grace_s = busy_grace_s
        self._lease: Lease | None = None
        self._freed = asyncio.Event()
        metrics.set_state(self.status)

    @property
    def avg_inference_time_ms(self) -> float:
        return self._inference_ms_total / self.total_requests if self.total_requests else 0.0

    @property
    def ready(self) -> bool:
        return self.status not in (WorkerStatus.loading, WorkerStatus.error)

    def loaded(self) -> None:
        self._set_status(WorkerStatus.idle)

    def failed(self) -> None:
        self._set_status(WorkerStatus.error)

    def record_chat(self, duration_ms: float) -> None:
        self.total_requests += 1
        self._inference_ms_total += duration_ms

    async def acquire(self, status: WorkerStatus, session_id: str | None = None) -> Lease:
        """Admit one session, or raise NotReady / Busy."""
        if not self.ready:
            raise NotReady()
        if self._lease is not None:
            freed = self._freed
            try:
                await asyncio.wait_for(freed.wait(), timeout=self.busy_grace_s)
            except asyncio.TimeoutError:
                pass
        if self._lease is not None:
            raise Busy(self.status)
        lease = Lease(self, status, session_id)
        self._lease = lease
        self.current_session_id = session_id
        self._set_status(status)
        return lease

    def _free(self, lease: Lease) -> None:
        if self._lease is not lease:
            return
        self._lease = None
        self.current_session_id = None
        self._set_status(WorkerStatus.idle)
        self._freed.set()
        self._freed = asyncio.Event()

    def _set_status(self, status: WorkerStatus) -> None:
        self.status = status
        metrics.set_state(status)
