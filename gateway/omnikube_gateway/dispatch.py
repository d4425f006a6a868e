"""The queue's one dispatch point and the `lease()` interface every proxy uses.

Interface (other modules code against exactly this):

    dispatcher = app.state.dispatcher
    async with dispatcher.lease(TaskType.omni_duplex, on_update=send_frame, session_id=sid) as lease:
        ...  # talk to lease.http_url / lease.ws_url; call lease.fail(reason) if the worker broke

- `lease()` hands out an idle worker at once, else enqueues (FIFO, `max_queue_size`; full ->
  `QueueFull` with `retry_after` seconds) and awaits a worker for at most `request_timeout`
  (`QueueTimeout`). An admin `DELETE /api/queue/{id}` ends the wait with `QueueCancelled`.
- `on_update(QueueUpdate)` is awaited once on entering the queue and again whenever the ticket's
  position changes or its ETA moves away from what a client counting down from the last update
  would show; never on a timer alone. An exception from it (client gone) ends the wait.
- Cancelling the awaiting task (client left) frees the place at once, and if a worker had just
  been assigned in that instant, frees the worker too. Leaving the `async with` block, normally or
  by any exception, always releases the worker: the busy leak of the original cannot happen.
- Only sessions that end normally feed the ETA, with paused time excluded; `lease.fail()` (the
  worker broke: it also leaves rotation until a health probe re-admits it) and `lease.abort()`
  (the client gave up early) do not.

`_dispatch()` is the only code that moves a ticket from the queue to a worker. It runs whenever
the registry changes (a release, a worker becoming healthy or routable) and after a cancel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import AsyncIterator, Awaitable, Callable

from omnikube.protocol import TaskType

from . import metrics
from .eta import Estimator, Job, Running
from .queue import Ticket, WaitQueue, new_ticket_id
from .registry import Session, Worker, WorkerRegistry

log = logging.getLogger(__name__)

TICK_S = 1.0            # how often estimates are refreshed between events
TELL_MIN_DRIFT_S = 2.0  # an ETA that drifted less than this from the client's countdown is not re-sent
TELL_DRIFT_RATIO = 0.1


class QueueFull(Exception):
    """The queue holds `max_queue_size` tickets. Answer 503 with `Retry-After: retry_after`."""

    def __init__(self, max_size: int, retry_after: float):
        super().__init__(f"Queue full ({max_size} requests)")
        self.max_size = max_size
        self.retry_after = retry_after


class QueueTimeout(Exception):
    """Waited longer than `request_timeout` for a worker."""


class QueueCancelled(Exception):
    """The ticket was cancelled through the admin API."""


@dataclass
class QueueUpdate:
    ticket_id: str
    position: int  # 1-based among waiting tickets
    estimated_wait_s: float
    queue_length: int


@dataclass
class Lease:
    ticket_id: str
    worker_id: str
    http_url: str  # e.g. "http://10.0.0.5:22400"
    ws_url: str    # e.g. "ws://10.0.0.5:22400"
    task_type: TaskType = TaskType.chat
    queue_wait_s: float = 0.0
    estimated_wait_s: float = 0.0  # what the client was told on entering the queue (0 if never queued)
    outcome: str = "ok"
    failure: str | None = None
    _dispatcher: "Dispatcher | None" = field(default=None, repr=False)
    _worker: Worker | None = field(default=None, repr=False)
    _session: Session | None = field(default=None, repr=False)

    def fail(self, reason: str) -> None:
        """The session ended because the worker failed: take it out of rotation until it is healthy."""
        if self.outcome != "worker_failed":
            self.outcome, self.failure = "worker_failed", reason
            metrics.WORKER_FAILURES.inc()
            if self._dispatcher is not None:
                self._dispatcher.registry.mark_unhealthy(self.worker_id, reason)
            log.warning("worker %s failed during %s: %s", self.worker_id, self.ticket_id, reason)

    def abort(self, outcome: str = "client_left") -> None:
        """The session ended early for a reason that is not the worker's; its time is not an ETA sample.
        `outcome` is one of `metrics.OUTCOMES` (anything else is counted as `client_left`)."""
        if self.outcome == "ok":
            self.outcome = outcome if outcome in metrics.OUTCOMES and outcome != "ok" else "client_left"

    def worker_error(self) -> None:
        """The worker answered with an error (it is alive)."""
        if self.outcome == "ok":
            self.outcome = "worker_error"

    def refused(self, reason: str) -> None:
        """The worker is alive but taken (by a session another gateway started): it is not handed
        out again until a health probe sent after this moment says it is idle."""
        self.worker_error()
        if self._dispatcher is not None:
            self._dispatcher.registry.mark_taken(self.worker_id, reason)
        log.info("worker %s refused %s: %s", self.worker_id, self.ticket_id, reason)

    def pause(self) -> None:
        if self._dispatcher and self._worker and self._session:
            self._dispatcher.registry.set_paused(self._worker, self._session, True)

    def resume(self) -> None:
        if self._dispatcher and self._worker and self._session:
            self._dispatcher.registry.set_paused(self._worker, self._session, False)


class Dispatcher:
    def __init__(
        self,
        registry: WorkerRegistry,
        estimator: Estimator,
        *,
        max_queue_size: int,
        queue_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.registry = registry
        self.estimator = estimator
        self.max_queue_size = max_queue_size
        self.queue_timeout = queue_timeout
        self.queue = WaitQueue()
        self._clock = clock
        self._dispatching = False
        self._tick_task: asyncio.Task | None = None
        registry.on_change = self._dispatch

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._tick_task is None:
            self._tick_task = asyncio.create_task(self._tick(), name="dispatcher-tick")

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
            self._tick_task = None
        for ticket in self.queue:
            self.queue.remove(ticket.ticket_id)
            if not ticket.future.done():
                ticket.future.set_exception(QueueCancelled("gateway shutting down"))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._recompute()
                self.export_metrics()
            except Exception:  # never let the refresher die
                log.exception("queue refresh failed")

    # -- the interface -------------------------------------------------------------------------
    @asynccontextmanager
    async def lease(
        self,
        task_type: TaskType,
        *,
        on_update: Callable[[QueueUpdate], Awaitable[None]] | None = None,
        session_id: str | None = None,
        max_new_tokens: int | None = None,
    ) -> AsyncIterator[Lease]:
        task_type = TaskType(task_type)
        arrived = self._clock()
        ticket = Ticket(
            new_ticket_id(), task_type, session_id, datetime.now(), arrived, asyncio.get_running_loop().create_future(),
            max_new_tokens=max_new_tokens,
        )
        worker = self._pick(ticket) if len(self.queue) == 0 else None
        if worker is not None:
            session = self.registry.acquire(worker, ticket.ticket_id, task_type, session_id, max_new_tokens)
        else:
            worker, session = await self._wait_in_queue(ticket, on_update)
        waited = self._clock() - arrived
        metrics.QUEUE_WAIT.labels(task_type.value).observe(waited)
        metrics.ACTIVE_SESSIONS.labels(task_type.value).inc()
        lease = Lease(
            ticket.ticket_id, worker.worker_id, worker.http_url, worker.ws_url, task_type, waited, ticket.entry_estimated_wait_s,
            _dispatcher=self, _worker=worker, _session=session,
        )
        try:
            yield lease
        except asyncio.CancelledError:
            lease.abort("client_left")
            raise
        except BaseException:
            lease.worker_error()
            raise
        finally:
            self._finish(lease, worker, session)

    def cancel(self, ticket_id: str) -> bool:
        """Admin cancel of a waiting ticket; False if it is not waiting."""
        ticket = self.queue.remove(ticket_id)
        if ticket is None:
            return False
        ticket.cancelled = True
        if not ticket.future.done():
            ticket.future.set_exception(QueueCancelled("Cancelled"))
        metrics.REQUESTS.labels(ticket.task_type.value, "cancelled").inc()
        self._dispatch()
        return True

    def can_dispatch_now(self) -> bool:
        """A lease() entered now would get a worker without queueing."""
        return len(self.queue) == 0 and self.registry.any_available()

    def configure_eta(self, baselines: dict[TaskType, float], alpha: float | None = None) -> None:
        """New ETA baselines: the estimator takes them, and every waiting ticket is re-estimated."""
        self.estimator.configure(baselines, alpha)
        self._recompute()

    def snapshot(self, ticket_id: str) -> Ticket | None:
        return self.queue.get(ticket_id)

    def running(self) -> list[tuple[Worker, Session]]:
        return [(w, w.session) for w in self.registry if w.session is not None]

    def estimate_for(self, task_type: TaskType) -> float:
        """Wait a new ticket of this type would have now."""
        return self.estimator.queue_waits(self._capacity(), self._queued() + [task_type])[-1]

    # -- queue mechanics -----------------------------------------------------------------------
    async def _wait_in_queue(self, ticket: Ticket, on_update) -> tuple[Worker, Session]:
        if len(self.queue) >= self.max_queue_size:
            metrics.REQUESTS.labels(ticket.task_type.value, "queue_full").inc()
            head = self.queue.head()
            raise QueueFull(self.max_queue_size, max(1.0, round(head.estimated_wait_s if head else 1.0)))
        self.queue.append(ticket)
        self._recompute()
        ticket.entry_estimated_wait_s = ticket.estimated_wait_s
        loop = asyncio.get_running_loop()
        deadline = ticket.enqueued + self.queue_timeout
        try:
            if on_update is not None:
                await self._tell(ticket, on_update)
            while not ticket.future.done():
                remaining = deadline - self._clock()
                if remaining <= 0:
                    metrics.REQUESTS.labels(ticket.task_type.value, "queue_timeout").inc()
                    raise QueueTimeout(f"No worker became free within {self.queue_timeout:g} s")
                ticket.wake = loop.create_future()
                await asyncio.wait({ticket.future, ticket.wake}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if not ticket.future.done() and ticket.wake.done() and on_update is not None:
                    await self._tell(ticket, on_update)
            return ticket.future.result()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and not ticket.future.done():
                metrics.REQUESTS.labels(ticket.task_type.value, "client_left").inc()
            self._abandon(ticket)
            raise

    async def _tell(self, ticket: Ticket, on_update) -> None:
        ticket.told_position, ticket.told_estimated_wait_s, ticket.told_at = ticket.position, ticket.estimated_wait_s, self._clock()
        await on_update(QueueUpdate(ticket.ticket_id, ticket.position, ticket.estimated_wait_s, len(self.queue)))

    def _abandon(self, ticket: Ticket) -> None:
        """The waiter is gone (timeout, cancel, client left): free its place, or its fresh worker."""
        future = ticket.future
        if future.done() and not future.cancelled() and future.exception() is None:
            worker, session = future.result()
            self.registry.release(worker, session)
        else:
            future.cancel()
        if self.queue.remove(ticket.ticket_id) is not None:
            self._dispatch()

    def _pick(self, ticket: Ticket) -> Worker | None:
        """First available worker in registry order; the one that last served this session id wins."""
        candidates = self.registry.available()
        if not candidates:
            return None
        if ticket.session_id:
            for worker in candidates:
                if worker.last_session_id == ticket.session_id:
                    return worker
        return candidates[0]

    def _dispatch(self) -> None:
        if self._dispatching:
            return  # re-entered through a registry callback; the outer loop sees the change
        self._dispatching = True
        try:
            for ticket in self.queue:
                if ticket.future.done():
                    self.queue.remove(ticket.ticket_id)
                    continue
                worker = self._pick(ticket)
                if worker is None:
                    break
                self.queue.remove(ticket.ticket_id)
                session = self.registry.acquire(worker, ticket.ticket_id, ticket.task_type, ticket.session_id,
                                                ticket.max_new_tokens)
                ticket.position, ticket.estimated_wait_s = 0, 0.0
                ticket.future.set_result((worker, session))
        finally:
            self._dispatching = False
        self._recompute()

    def _capacity(self) -> list[Running | None]:
        now = self._clock()
        capacity: list[Running | None] = []
        for worker in self.registry:
            session = worker.session
            if session is not None:
                if worker.ready and not worker.draining:
                    capacity.append(self._running(worker, session, now))
            elif worker.available:
                capacity.append(None)
        return capacity

    def estimated_remaining(self, worker: Worker, session: Session) -> float:
        """How much longer `session` should hold `worker` (s), as the queue's ETA sees it."""
        return self.estimator.remaining(self._running(worker, session, self._clock()))

    def _running(self, worker: Worker, session: Session, now: float) -> Running:
        return Running(session.task_type, session.active_seconds(now), self._budget(session.max_new_tokens, worker))

    def _queued(self) -> list[TaskType | Job]:
        return [Job(t.task_type, self._budget(t.max_new_tokens)) if t.max_new_tokens else t.task_type for t in self.queue]

    def _budget(self, max_new_tokens: int | None, worker: Worker | None = None) -> float | None:
        """The longest a chat of `max_new_tokens` should take (s), at the pace its worker reports, or
        (queued, or a worker that has not measured any) the mean pace of the workers that have."""
        if not max_new_tokens:
            return None
        paces = [(worker.generation_overhead_ms, worker.ms_per_token)] if worker is not None else []
        if not paces or paces[0][1] is None:
            paces = [(w.generation_overhead_ms, w.ms_per_token) for w in self.registry if w.ms_per_token is not None]
        if not paces:
            return None
        overhead = sum(p[0] or 0.0 for p in paces) / len(paces)
        per_token = sum(p[1] for p in paces) / len(paces)
        return (overhead + max_new_tokens * per_token) / 1000.0

    def _recompute(self) -> None:
        tickets = list(self.queue)
        metrics.QUEUE_LENGTH.set(len(tickets))
        if not tickets:
            return
        waits = self.estimator.queue_waits(self._capacity(), self._queued())
        now = self._clock()
        for position, (ticket, eta) in enumerate(zip(tickets, waits), start=1):
            ticket.position, ticket.estimated_wait_s = position, eta
            countdown = ticket.told_estimated_wait_s - (now - ticket.told_at)
            drift = abs(eta - countdown)
            if position != ticket.told_position or drift > max(TELL_MIN_DRIFT_S, TELL_DRIFT_RATIO * eta):
                ticket.notify()

    def _finish(self, lease: Lease, worker: Worker, session: Session) -> None:
        now = self._clock()
        held = now - session.started
        active = session.active_seconds(now)
        task_type = lease.task_type.value
        metrics.ACTIVE_SESSIONS.labels(task_type).dec()
        metrics.REQUESTS.labels(task_type, lease.outcome).inc()
        metrics.REQUEST_DURATION.labels(task_type).observe(held)
        if lease.outcome == "ok":
            self.estimator.record(lease.task_type, active, self._budget(session.max_new_tokens, worker))
        self.registry.release(worker, session)

    def export_metrics(self) -> None:
        counts: dict[str, int] = {state: 0 for state in metrics.WORKER_STATES}
        for worker in self.registry:
            counts[metrics.worker_state_label(worker.status, ready=worker.ready, draining=worker.draining)] += 1
        for state, count in counts.items():
            metrics.WORKERS.labels(state).set(count)
        capacity = self._capacity()
        queued = self._queued()
        for task_type in TaskType:
            metrics.ETA.labels(task_type.value).set(self.estimator.queue_waits(capacity, queued + [task_type])[-1])
