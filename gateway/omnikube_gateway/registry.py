"""The one owner of worker state.

Three sources write into it, each through its own method, and nothing else touches a `Worker`:

- discovery (`upsert`, `remove`): where a worker is and whether Kubernetes says it may take work
  (Ready with an IP, not terminating, not drained);
- health (`apply_probe`, `mark_unhealthy`, `mark_taken`): what the worker itself reports on
  `/health`, that a connection to it just failed (which takes it out of rotation at once), or that
  it refused a session because another one holds it (another gateway replica's: it stays out of
  reach until a probe sent after the refusal says it is idle);
- the dispatcher (`acquire`, `release`, `set_paused`): which session holds the worker.

The effective state shown to clients is derived from these, never stored twice. A probe that says
"idle" while a session holds the worker is ignored (the worker may not have seen the session yet),
and a probe that says "busy" but was sent before the gateway's release is ignored too (the original
let such lagging probes keep a free worker unused for 10 s). Every change calls `on_change`, which
the dispatcher uses to hand queued tickets to freed workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

from omnikube.protocol import TaskType, WorkerHealthResponse, WorkerStatus
from omnikube.workers import base_url

OFFLINE = "offline"  # not a worker-reported state: the gateway cannot reach the worker

BUSY_STATUS = {
    TaskType.chat: WorkerStatus.busy_chat,
    TaskType.streaming: WorkerStatus.busy_chat,
    TaskType.half_duplex: WorkerStatus.busy_half_duplex,
    TaskType.audio_duplex: WorkerStatus.duplex_active,
    TaskType.omni_duplex: WorkerStatus.duplex_active,
}

# Request-type strings of the original's status API.
WIRE_LABEL = {
    TaskType.chat: "chat",
    TaskType.streaming: "chat_ws",
    TaskType.half_duplex: "half_duplex_audio",
    TaskType.audio_duplex: "audio_duplex",
    TaskType.omni_duplex: "omni_duplex",
}


_BUSY_VALUES = {status.value for status in WorkerStatus if status.busy}


@dataclass
class Session:
    """The session holding a worker, from dispatch to release."""

    ticket_id: str
    task_type: TaskType
    session_id: str | None
    started_at: datetime
    started: float  # monotonic
    paused_since: float | None = None
    paused_total: float = 0.0
    max_new_tokens: int | None = None  # a chat's token budget, when the request said (or implied) it

    def active_seconds(self, now: float) -> float:
        paused = self.paused_total + (now - self.paused_since if self.paused_since is not None else 0.0)
        return max(0.0, now - self.started - paused)


@dataclass
class Worker:
    worker_id: str
    host: str
    port: int
    gpu_id: int
    # Discovery's view.
    ready: bool = True
    draining: bool = False
    # Health's view. None = never probed yet.
    healthy: bool | None = None
    reported: str = OFFLINE
    current_session_id: str | None = None
    total_requests: int = 0
    avg_inference_time_ms: float = 0.0
    generation_overhead_ms: float | None = None  # the worker's own measure of its chats (its /health)
    ms_per_token: float | None = None
    last_heartbeat: datetime | None = None
    last_error: str | None = None
    refused_at: float | None = None  # when it last refused a session of ours as taken
    # Dispatcher's view.
    session: Session | None = None
    released_at: float = 0.0
    last_session_id: str | None = None

    @property
    def http_url(self) -> str:
        return base_url(self.host, self.port)

    @property
    def ws_url(self) -> str:
        return "ws" + self.http_url[4:]

    @property
    def status(self) -> str:
        """The state clients see (gateway.md §3.2 strings)."""
        if self.session is not None:
            if self.session.paused_since is not None:
                return WorkerStatus.duplex_paused.value
            return BUSY_STATUS[self.session.task_type].value
        if not self.healthy:
            return WorkerStatus.error.value if self.reported == WorkerStatus.error.value else OFFLINE
        return self.reported

    @property
    def taken_elsewhere(self) -> bool:
        """Busy with a session that is not this gateway's (or was, until the next probe)."""
        return self.session is None and self.reported in _BUSY_VALUES

    @property
    def available(self) -> bool:
        """May be handed a new session right now."""
        return (
            self.session is None
            and self.ready
            and not self.draining
            and bool(self.healthy)
            and self.reported == WorkerStatus.idle.value
        )


class WorkerRegistry:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._workers: dict[str, Worker] = {}
        self._clock = clock
        self.on_change: Callable[[], None] = lambda: None
        self.on_worker_added: Callable[[Worker], None] = lambda worker: None
        self.on_worker_removed: Callable[[Worker], None] = lambda worker: None
        self.on_unhealthy: Callable[[Worker], None] = lambda worker: None

    # -- reading -------------------------------------------------------------------------------
    def __iter__(self):
        return iter(list(self._workers.values()))

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def ids(self) -> set[str]:
        return set(self._workers)

    def available(self) -> list[Worker]:
        return [w for w in self._workers.values() if w.available]

    def any_available(self) -> bool:
        return any(w.available for w in self._workers.values())

    # -- discovery -----------------------------------------------------------------------------
    def upsert(self, worker_id: str, host: str, port: int, gpu_id: int, *, ready: bool = True, draining: bool = False) -> Worker:
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = Worker(worker_id, host, port, gpu_id, ready=ready, draining=draining)
            self._workers[worker_id] = worker
            self.on_worker_added(worker)
        else:
            if (worker.host, worker.port) != (host, port):
                # A new address is a new process (e.g. a restarted pod): nothing known about it holds.
                worker.host, worker.port = host, port
                worker.healthy, worker.reported = None, OFFLINE
                self.on_worker_added(worker)
            worker.gpu_id, worker.ready, worker.draining = gpu_id, ready, draining
        self.on_change()
        return worker

    def remove(self, worker_id: str) -> Worker | None:
        """Forget a worker. A session running on it keeps its lease until it ends by itself."""
        worker = self._workers.pop(worker_id, None)
        if worker is not None:
            worker.ready = False
            self.on_worker_removed(worker)
            self.on_change()
        return worker

    def retain(self, worker_ids: Iterable[str]) -> None:
        keep = set(worker_ids)
        for worker_id in list(self._workers):
            if worker_id not in keep:
                self.remove(worker_id)

    # -- health --------------------------------------------------------------------------------
    def apply_probe(self, worker_id: str, sent_at: float, health: WorkerHealthResponse | None, error: str | None = None,
                    status: str = OFFLINE) -> None:
        """A probe's answer; None (with `error`, and `status` shown meanwhile) when it had none."""
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        if health is None:
            worker.healthy, worker.reported, worker.last_error = False, status, error
            self.on_change()
            return
        if worker.refused_at is not None:
            if sent_at < worker.refused_at:
                return  # it may still say idle from before it was taken
            worker.refused_at = None
        reported = health.worker_status
        worker.last_heartbeat = datetime.now()
        worker.total_requests = health.total_requests
        worker.avg_inference_time_ms = health.avg_inference_time_ms
        worker.generation_overhead_ms = health.generation_overhead_ms
        worker.ms_per_token = health.ms_per_token
        worker.current_session_id = health.current_session_id
        worker.healthy = reported is not WorkerStatus.error
        worker.last_error = None
        if reported.busy and worker.session is None and sent_at < worker.released_at:
            reported = WorkerStatus.idle  # a lagging probe from before our release
        worker.reported = reported.value
        self.on_change()

    def mark_unhealthy(self, worker_id: str, reason: str) -> None:
        worker = self._workers.get(worker_id)
        if worker is not None and worker.healthy is not False:
            worker.healthy, worker.reported, worker.last_error = False, OFFLINE, reason
            self.on_unhealthy(worker)
            self.on_change()

    def mark_taken(self, worker_id: str, reason: str) -> None:
        worker = self._workers.get(worker_id)
        if worker is not None:
            worker.refused_at = self._clock()
            if worker.reported not in _BUSY_VALUES:
                worker.reported = WorkerStatus.busy_chat.value  # busy with what, the next probe says
            worker.last_error = reason
            self.on_unhealthy(worker)  # probe it now and often: it is handed out the moment it is free
            self.on_change()

    # -- dispatcher ----------------------------------------------------------------------------
    def acquire(self, worker: Worker, ticket_id: str, task_type: TaskType, session_id: str | None,
                max_new_tokens: int | None = None) -> Session:
        assert worker.available, f"{worker.worker_id} is not available"
        worker.session = Session(ticket_id, task_type, session_id, datetime.now(), self._clock(),
                                 max_new_tokens=max_new_tokens)
        worker.last_session_id = session_id
        return worker.session

    def release(self, worker: Worker, session: Session) -> None:
        if worker.session is session:
            worker.session = None
            worker.released_at = self._clock()
            if worker.reported != OFFLINE and worker.healthy and worker.refused_at is None:
                worker.reported = WorkerStatus.idle.value
            self.on_change()

    def set_paused(self, worker: Worker, session: Session, paused: bool) -> None:
        if worker.session is not session:
            return
        now = self._clock()
        if paused and session.paused_since is None:
            session.paused_since = now
        elif not paused and session.paused_since is not None:
            session.paused_total += now - session.paused_since
            session.paused_since = None

