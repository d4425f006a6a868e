"""The worker's state and its one-session-at-a-time admission.

Only `WorkerState` changes `worker_status` and `current_session_id`. A session holds a `Lease`
from admission until its cleanup is done. A newcomer waits (up to `busy_grace_s`, without polling)
for the running session to be freed before it is turned away: the gateway hands a worker to the
next client the moment the previous client's socket closes, which can be before this process has
even noticed that disconnect. Waiters are served first come, first served: a freed worker is handed
to the oldest waiter directly, so neither a newcomer nor a later waiter can overtake it (waking
every waiter at once let one win and refused the rest before their grace was up).

This admission is also the one source of truth for whether the worker is taken: two gateways that
both believe it idle cannot both start a session here; the second is refused (`Busy`) and moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
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
        self._handed_over = False  # freed and promised to the waiter at the head, which has not run yet
        self._waiters: deque[asyncio.Future[None]] = deque()
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
        """Admit one session, or raise NotReady / Busy (after waiting in line up to `busy_grace_s`)."""
        if not self.ready:
            raise NotReady()
        if self._lease is not None or self._handed_over or self._waiters:
            await self._wait_turn()
        lease = Lease(self, status, session_id)
        self._lease = lease
        self.current_session_id = session_id
        self._set_status(status)
        return lease

    async def _wait_turn(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # asyncio.wait, not wait_for: wait_for may swallow a cancel that races the hand-over.
            await asyncio.wait({waiter}, timeout=self.busy_grace_s)
        except asyncio.CancelledError:
            self._give_up(waiter)
            raise
        if not waiter.done():
            self._give_up(waiter)
            raise Busy(self.status)
        self._handed_over = False  # the turn is ours: acquire() takes the lease without yielding

    def _give_up(self, waiter: "asyncio.Future[None]") -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            waiter.cancel()
        elif waiter.done() and self._handed_over:
            self._handed_over = False  # handed a turn it will not use: pass it on
            self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._handed_over = True
                waiter.set_result(None)
                return

    def _free(self, lease: Lease) -> None:
        if self._lease is not lease:
            return
        self._lease = None
        self.current_session_id = None
        self._set_status(WorkerStatus.idle)
        self._hand_over()

    def _set_status(self, status: WorkerStatus) -> None:
        self.status = status
        metrics.set_state(status)
