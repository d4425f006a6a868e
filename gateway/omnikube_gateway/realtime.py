"""`/v1/realtime`: the MiniCPM-o Realtime protocol, carried onto one worker's `/ws/duplex`.

One connection is one session:

    accept -> queue (session.queued / session.queue_update*, session.queue_done always)
           -> init frame -> worker `prepare` -> session.created
           -> appends <-> results, until the client closes, the time or context limit is hit,
              the worker fails, or the client sends something we must refuse
           -> session.closed (or error, then session.closed) -> stop the worker -> close

Queueing, leaving while queued, refusals, the worker connection and stopping are the shared
engine's (`client_session`): the client is read from the moment of accept, so an init frame sent
while queued (the browser's 100 ms fallback) is kept in order, and a client that leaves while
queued gives up its place at once. This module is the protocol's translation. Whatever ends the
session, the worker gets `stop` or a closed socket and the lease is released: no path leaves a
worker marked busy. A stopping gateway sends `error` (`gateway_stopping`) and `session.closed`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from omnikube.protocol import AUDIO_DUPLEX_PREFIX, RefusalReason, TaskType

from . import metrics
from .auth import authorize_websocket
from .client_session import CLOSED, STOPPING_MESSAGE, ClientSession, Refused, close, queue_frame, worker_session
from .dispatch import Lease, QueueUpdate
from .realtime_frames import (
    BadFrame,
    CloseRequest,
    InputChunk,
    OutputMapper,
    SessionInit,
    audio_chunk_frame,
    error_event,
    parse_client_frame,
    prepare_frame,
)

log = logging.getLogger(__name__)
router = APIRouter()

SUBPROTOCOL = "map.realtime"
MODES = {"audio": TaskType.audio_duplex, "video": TaskType.omni_duplex}
# The protocol's error codes for the engine's refusals.
REFUSAL_CODES = {RefusalReason.queue_full: "queue_full", RefusalReason.queue_timeout: "worker_busy",
                 RefusalReason.cancelled: "worker_busy", RefusalReason.no_worker: "worker_lost"}


@dataclass(frozen=True)
class RealtimeLimits:
    """Per-mode session limits (config section `realtime`; these are the protocol's defaults)."""

    audio_max_session_s: float = 600.0
    video_max_session_s: float = 300.0
    max_kv_tokens: int = 8192
    init_timeout_s: float = 30.0      # accept-to-init frame, once a worker is held
    prepare_timeout_s: float = 60.0   # worker `prepare` to `prepared`
    result_timeout_s: float = 30.0    # a chunk sent and no worker frame since: the worker hangs
    stop_grace_s: float = 3.0         # `stop` to `stopped` before the socket is simply closed

    @classmethod
    def from_app(cls, app: Any) -> "RealtimeLimits":
        settings = getattr(app.state, "settings", None)
        section = getattr(getattr(settings, "config", None), "realtime", None)
        if section is None:
            return cls()
        known = {name: getattr(section, name) for name in cls.__dataclass_fields__ if hasattr(section, name)}
        return cls(**known)


_last_id_ms = 0


def new_session_id() -> str:
    """`rt_<unix ms>`, as the protocol has it; two connections in one millisecond get distinct ids."""
    global _last_id_ms
    _last_id_ms = max(int(time.time() * 1000), _last_id_ms + 1)
    return f"rt_{_last_id_ms}"


@dataclass
class Ending:
    """Why a session ended, and what the client and the metrics are told."""

    reason: str                          # session.closed reason
    outcome: str                         # metrics outcome
    error: tuple[str, str] | None = None  # (code, message) of an `error` event sent first
    close_code: int = 1000
    worker_failed: str | None = None      # the worker broke: take it out of rotation
    tell_client: bool = True


class _ClientGone(Exception):
    pass


class RealtimeSession:
    def __init__(self, websocket: WebSocket, mode: str, limits: RealtimeLimits) -> None:
        self.ws = websocket
        self.mode = mode
        self.video = mode == "video"
        self.task_type = MODES[mode]
        self.limits = limits
        self.session_id = new_session_id()
        self.client = ClientSession(websocket, on_stop=self._stopping)
        self.assigned = False
        self.queued_once = False
        self.mapper: OutputMapper | None = None
        self.max_kv_tokens = limits.max_kv_tokens
        self.max_turn_tokens: int | None = None
        self.outstanding = 0  # chunks sent to the worker and not yet answered
        self.progress_at = time.monotonic()
        self.closed = False

    # -- plumbing ------------------------------------------------------------------------------
    async def run(self) -> str:
        return await self.client.run(self._lease_and_serve()) or "client_left"

    async def _send(self, event: dict[str, Any]) -> None:
        if self.closed or self.client.gone.is_set():
            raise _ClientGone()
        try:
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise _ClientGone() from None

    async def _next_frame(self):
        message = await self.client.inbox.get()
        if message is CLOSED:
            raise _ClientGone()
        return parse_client_frame(message, video=self.video)

    async def _stopping(self) -> None:
        with suppress(_ClientGone):
            await self._send(error_event("gateway_stopping", STOPPING_MESSAGE))
            await self._send(self.mapper.closed_event("error") if self.mapper else {"type": "session.closed", "reason": "error"})

    # -- queue ---------------------------------------------------------------------------------
    async def _on_queue_update(self, update: QueueUpdate) -> None:
        frame = queue_frame(update, first=not self.queued_once, prefix="session.")
        self.queued_once = True
        await self._send(frame.model_dump(exclude_none=True))

    def _assigned(self, lease: Lease) -> None:
        self.assigned = True
        self.client.start_relaying()  # from here on the session ends itself, telling the worker

    async def _lease_and_serve(self) -> str:
        # Audio sessions carry the `adx_` prefix so the worker labels its recording as audio duplex.
        worker_sid = (AUDIO_DUPLEX_PREFIX if self.mode == "audio" else "") + self.session_id
        try:
            async with worker_session(self.ws.app.state.dispatcher, self.task_type, f"/ws/duplex?session_id={worker_sid}",
                                      on_update=self._on_queue_update, session_id=self.session_id,
                                      on_assigned=self._assigned) as (lease, worker, _):
                ending = await self._serve(lease, worker)
                if ending.worker_failed:
                    lease.fail(ending.worker_failed)
                elif ending.outcome not in ("ok",):
                    lease.abort(ending.outcome)
                return ending.outcome
        except Refused as refused:
            refusal = refused.refusal
            message = refusal.message
            if refusal.reason is RefusalReason.queue_full:
                message = f"{message}; retry in {refusal.retry_after_s:g} s"
            with suppress(_ClientGone):
                await self._send(error_event(REFUSAL_CODES[refusal.reason], message))
            self.closed = True
            await close(self.ws, 1013, message)
            return refusal.reason.value
        except _ClientGone:
            return "client_left"

    async def _close(self, code: int, reason: str = "") -> None:
        self.closed = True
        if not self.client.gone.is_set():
            await close(self.ws, code, reason)

    # -- session -------------------------------------------------------------------------------
    async def _serve(self, lease: Lease, worker: ClientConnection) -> Ending:
        try:
            await self._send({"type": "session.queue_done"})
            init = await self._await_init()
            await _send_worker(worker, prepare_frame(init))
            prepared = await asyncio.wait_for(self._await_prepared(worker), self.limits.prepare_timeout_s)
            await self._send({"type": "session.created", "session_id": self.session_id, "prompt_length": prepared.get("prompt_length", 0)})
            ending = await self._relay(worker)
        except _ClientClosedEarly as early:
            ending = Ending(early.reason, "client_left")
        except BadFrame as bad:
            ending = Ending("error", "bad_request", (bad.code, bad.message), bad.close_code)
        except _ClientGone:
            ending = Ending("client_left", "client_left", tell_client=False)
        except _WorkerLost as lost:
            ending = Ending("error", "worker_failed", ("worker_lost", str(lost)), 1011, worker_failed=str(lost))
        except _WorkerError as failed:
            ending = Ending("error", "worker_error", ("inference_error", str(failed)), 1011)
        except asyncio.TimeoutError:
            ending = Ending("error", "worker_failed", ("worker_lost", "the worker did not prepare the session in time"), 1011,
                            worker_failed="prepare timed out")
        except asyncio.CancelledError:
            await asyncio.shield(worker.close())  # gateway shutting down: the worker cleans up on close
            raise
        except Exception as exc:  # a bug of ours: still end cleanly and free the worker
            log.exception("%s: realtime session failed", self.session_id)
            ending = Ending("error", "worker_error", ("internal_error", f"{exc.__class__.__name__}: {exc}"), 1011)
        await self._end(ending, worker)
        return ending

    async def _await_init(self) -> SessionInit:
        try:
            init = await asyncio.wait_for(self._first_init(), self.limits.init_timeout_s)
        except asyncio.TimeoutError:
            raise BadFrame("not_ready", f"no session.init within {self.limits.init_timeout_s:g} s of session.queue_done") from None
        self.mapper = OutputMapper(sdk=init.sdk, tts_enabled=init.tts_enabled)
        if init.max_kv_tokens:
            self.max_kv_tokens = min(init.max_kv_tokens, self.limits.max_kv_tokens)
        self.max_turn_tokens = init.max_turn_tokens
        return init

    async def _first_init(self) -> SessionInit:
        while True:
            frame = await self._next_frame()
            if isinstance(frame, SessionInit):
                return frame
            if isinstance(frame, CloseRequest):
                raise _ClientClosedEarly(frame.reason)
            if isinstance(frame, InputChunk):
                raise BadFrame("not_ready", "send session.init (or session.update) before any audio")
            log.info("%s: ignoring %s before init", self.session_id, frame.type)

    async def _await_prepared(self, worker: ClientConnection) -> dict[str, Any]:
        while True:
            frame = await _recv_worker(worker)
            if frame.get("type") == "prepared":
                return frame
            if frame.get("type") == "error":
                raise _WorkerError(str(frame.get("error") or "prepare failed"))

    async def _relay(self, worker: ClientConnection) -> Ending:
        limit = self.limits.video_max_session_s if self.video else self.limits.audio_max_session_s
        uplink = asyncio.create_task(self._uplink(worker))
        downlink = asyncio.create_task(self._downlink(worker))
        tasks = {uplink, downlink}
        try:
            done, _ = await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                return Ending("timeout", "ok")
            return next(iter(done)).result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _uplink(self, worker: ClientConnection) -> Ending:
        while True:
            frame = await self._next_frame()
            if isinstance(frame, CloseRequest):
                return Ending(frame.reason, "ok")
            if isinstance(frame, InputChunk):
                force = frame.force_listen or self._turn_cap_reached()
                await _send_worker(worker, audio_chunk_frame(frame, force_listen=force))
                if not self.outstanding:
                    self.progress_at = time.monotonic()
                self.outstanding += 1
            elif isinstance(frame, SessionInit):
                log.info("%s: ignoring a repeated init frame", self.session_id)
            else:
                log.info("%s: ignoring unknown frame type %r", self.session_id, frame.type)

    def _turn_cap_reached(self) -> bool:
        return self.max_turn_tokens is not None and self.mapper is not None and self.mapper.turn_tokens >= self.max_turn_tokens

    async def _downlink(self, worker: ClientConnection) -> Ending:
        assert self.mapper is not None
        while True:
            frame = await self._recv_result(worker)
            kind = frame.get("type")
            if kind == "result":
                self.outstanding = max(0, self.outstanding - 1)
                for event in self.mapper.events(frame):
                    await self._send(event)
                if self.mapper.usage.kv_cache_length >= self.max_kv_tokens:
                    return Ending("context_full", "ok")
            elif kind == "error":
                raise _WorkerError(str(frame.get("error") or "inference failed"))
            elif kind == "timeout":
                return Ending("timeout", "ok")
            elif kind == "stopped":
                return Ending("stopped", "ok")
            else:
                log.debug("%s: worker frame %r not forwarded", self.session_id, kind)

    async def _recv_result(self, worker: ClientConnection) -> dict[str, Any]:
        """The next worker frame. A worker that owes results and stays silent too long is lost:
        a hung model call still answers WebSocket pings, so only this notices it."""
        receiving = asyncio.ensure_future(_recv_worker(worker))
        try:
            while True:
                done, _ = await asyncio.wait({receiving}, timeout=min(1.0, self.limits.result_timeout_s))
                if done:
                    self.progress_at = time.monotonic()
                    return receiving.result()
                if self.outstanding and time.monotonic() - self.progress_at > self.limits.result_timeout_s:
                    raise _WorkerLost(f"no result from the worker for {self.limits.result_timeout_s:g} s")
        finally:
            receiving.cancel()

    async def _end(self, ending: Ending, worker: ClientConnection) -> None:
        await _stop_worker(worker, self.limits.stop_grace_s)
        if ending.tell_client and not self.client.gone.is_set():
            with suppress(_ClientGone):
                if ending.error:
                    await self._send(error_event(*ending.error, client_fault=ending.outcome == "bad_request"))
                await self._send(self.mapper.closed_event(ending.reason) if self.mapper else {"type": "session.closed", "reason": ending.reason})
        await self._close(ending.close_code, ending.error[1] if ending.error else "")


class _WorkerLost(Exception):
    """The worker's connection broke: the worker is taken out of rotation."""


class _WorkerError(Exception):
    """The worker answered with an error; it is alive, but the session cannot go on."""


class _ClientClosedEarly(BadFrame):
    def __init__(self, reason: str) -> None:
        super().__init__("session_closed", "the client closed the session before it started")
        self.reason = reason


async def _send_worker(worker: ClientConnection, frame: dict[str, Any]) -> None:
    try:
        await worker.send(json.dumps(frame))
    except websockets.ConnectionClosed as exc:
        raise _WorkerLost(f"worker connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})") from None


async def _recv_worker(worker: ClientConnection) -> dict[str, Any]:
    try:
        message = await worker.recv()
    except websockets.ConnectionClosed as exc:
        raise _WorkerLost(f"worker connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})") from None
    try:
        frame = json.loads(message)
    except (json.JSONDecodeError, TypeError):
        raise _WorkerLost("worker sent a frame that is not JSON") from None
    return frame if isinstance(frame, dict) else {}


async def _stop_worker(worker: ClientConnection, grace_s: float) -> None:
    """Ask the worker to stop and wait briefly for `stopped`; closing the socket ends it regardless."""
    async def until_stopped() -> None:
        await worker.send(json.dumps({"type": "stop"}))
        while True:
            frame = json.loads(await worker.recv())
            if isinstance(frame, dict) and frame.get("type") == "stopped":
                return

    with suppress(Exception):
        await asyncio.wait_for(until_stopped(), grace_s)
    with suppress(Exception):
        await worker.close()


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket, mode: str = "video", model: str | None = None) -> None:
    """MiniCPM-o Realtime. `mode=audio|video` (default video, as the protocol says); `model` is accepted and logged."""
    if not await authorize_websocket(websocket):
        metrics.CLIENT_API.labels("realtime", "unauthorized").inc()
        return
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    if mode not in MODES:
        metrics.CLIENT_API.labels("realtime", "bad_request").inc()
        await websocket.send_text(json.dumps(error_event("invalid_mode", f"mode must be audio or video, not {mode!r}", client_fault=True)))
        await websocket.close(1008, "invalid mode")
        return
    session = RealtimeSession(websocket, mode, RealtimeLimits.from_app(websocket.app))
    log.info("%s: realtime %s session opened (model=%r)", session.session_id, mode, model)
    outcome = await session.run()
    metrics.CLIENT_API.labels("realtime", outcome).inc()
    log.info("%s: realtime session ended: %s", session.session_id, outcome)
