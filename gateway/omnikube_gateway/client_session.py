"""The client-session engine: what every protocol shares between a client and a leased worker.

`/ws/chat`, `/ws/half_duplex`, `/ws/duplex`, `/ws/streaming` (`proxy_ws`), `/v1/realtime`
(`realtime`), `/v1/chat/completions` (`openai_api`) and `POST /api/chat` (`proxy_http`) keep only
their own frame translation; this module owns, once:

- **queueing and leaving while queued**: a WebSocket client is read from the first moment into an
  `Inbox`, so frames sent while queued are kept in order and a client that leaves gives its place
  up at once (`ClientSession.run`); an HTTP client is watched with `wait_disconnect`;
- **refusals**: the queue's three exceptions become one `Refusal` (`refusal_for`), which each
  protocol renders as its own error frame, event or status;
- **the worker connection**, one policy (`worker_session`, numbers below): a worker that cannot be
  reached leaves rotation and the next attempt gets another one; a worker that refuses because it
  is taken (by another gateway replica: the worker's admission is the one source of truth) is
  marked busy and the request goes to another worker or back into the queue;
- **keep-alive and compression** on the worker link, and the relay's back-pressure window;
- **stopping**: `SessionTracker` ends every live session with an error frame the client can act on
  when the gateway stops (SIGTERM or lifespan shutdown), before the server cuts the sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import asynccontextmanager, suppress
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import Request, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from omnikube.protocol import (WORKER_BUSY_ERROR, WS_MAX_MESSAGE_BYTES, ErrorFrame, NotAJsonObject, QueueFrame, Refusal,
                               RefusalReason, TaskType, loads_object)

from .dispatch import Lease, QueueCancelled, QueueFull, QueueTimeout, QueueUpdate

log = logging.getLogger(__name__)

# ---- the worker connection: one policy ---------------------------------------------------------
# The worker holds a newcomer up to its busy grace (5 s) while the previous session's cleanup ends
# before it answers the handshake, so opening must outlast that; 3 s more covers a loaded node.
OPEN_TIMEOUT_S = 8.0
# Each failed attempt takes its worker out of rotation (or, when refused, marks it busy), so the
# next attempt gets a different worker or waits in the queue; three attempts bound how long a
# client waits on a run of dead workers to about 3 x OPEN_TIMEOUT_S.
ATTEMPTS = 3
# Pings find a worker host that vanished without closing the connection. The worker answers them
# from its event loop while the model runs in threads, so only a wedged process misses a minute.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 60.0
# Audio and video barely compress: per-message deflate cost ~5 ms per 85 kB chunk for nothing.
COMPRESSION = None
CLOSE_TIMEOUT_S = 2.0

# ---- the client side -----------------------------------------------------------------------------
RELAY_WINDOW = 32                          # frames in flight to the worker once relaying
QUEUED_BUFFER_BYTES = 64 * 1024 * 1024     # what a queued client may send before it is served
GOING_AWAY = {1001, 1012}                  # a worker closing with these is stopping, not done
STOPPING_MESSAGE = "The gateway is restarting; reconnect to start a new session"


class Closed:
    """The end marker in an `Inbox`: the client went away."""


CLOSED = Closed()


class InboxOverflow(Exception):
    pass


class Inbox:
    """Client frames on their way to the worker. Unbounded in count but capped in bytes while the
    session is queued (frames must not be lost); a window of `RELAY_WINDOW` frames once relaying,
    so a slow worker slows the client down instead of filling memory."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self._bytes = 0
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self.relaying = False

    async def put(self, frame: str | bytes | Closed) -> None:
        if isinstance(frame, Closed):
            pass  # the end marker never waits for room
        elif self.relaying:
            while len(self._items) >= RELAY_WINDOW:
                self._space.clear()
                await self._space.wait()
        elif self._bytes + len(frame) > QUEUED_BUFFER_BYTES:
            raise InboxOverflow()
        self._items.append(frame)
        self._bytes += 0 if isinstance(frame, Closed) else len(frame)
        self._readable.set()

    async def get(self) -> str | bytes | Closed:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        frame = self._items.popleft()
        self._bytes -= 0 if isinstance(frame, Closed) else len(frame)
        self._space.set()
        return frame


# ---- refusals ----------------------------------------------------------------------------------
QUEUE_REFUSALS = (QueueFull, QueueTimeout, QueueCancelled)


class Refused(Exception):
    """No worker could serve the request; carries the `Refusal` each protocol renders."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def refusal_for(exc: BaseException) -> Refusal:
    """The one mapping of the queue's exceptions (and of running out of workers) to a refusal."""
    if isinstance(exc, Refused):
        return exc.refusal
    if isinstance(exc, QueueFull):
        return Refusal(reason=RefusalReason.queue_full, message=str(exc), retry_after_s=exc.retry_after)
    if isinstance(exc, QueueTimeout):
        return Refusal(reason=RefusalReason.queue_timeout, message=str(exc), retry_after_s=5)
    if isinstance(exc, QueueCancelled):
        return Refusal(reason=RefusalReason.cancelled, message="Cancelled")
    raise TypeError(f"not a refusal: {exc!r}")


def queue_frame(update: QueueUpdate, first: bool, prefix: str = "") -> QueueFrame:
    """`queued` (the first, with the ticket id) or `queue_update`; `prefix` is the protocol's namespace."""
    return QueueFrame(type=prefix + ("queued" if first else "queue_update"), position=update.position,
                      estimated_wait_s=round(update.estimated_wait_s, 1), queue_length=update.queue_length,
                      ticket_id=update.ticket_id if first else None)


# ---- the worker connection ---------------------------------------------------------------------
class WorkerRefused(Exception):
    """The worker answered but will not take the session: another session holds it."""


Opening = Callable[[ClientConnection], Awaitable[list[str | bytes]]]


async def send_request(upstream: ClientConnection, request: str | bytes) -> list[str | bytes]:
    """The opening of `/ws/chat`: its worker admits after the request frame, so being taken comes
    back as the first answer (`Worker busy`), not as a refused handshake. Returns that answer."""
    await upstream.send(request)
    answer = await upstream.recv()
    if isinstance(answer, str) and len(answer) < 256:
        with suppress(NotAJsonObject):
            frame = loads_object(answer)
            if frame.get("type") == "error" and frame.get("error") == WORKER_BUSY_ERROR:
                raise WorkerRefused(WORKER_BUSY_ERROR)
    return [answer]


async def _connect(lease: Lease, path: str) -> ClientConnection | None:
    """The worker's socket; None when it could not be reached (it has left rotation)."""
    try:
        return await connect(lease.ws_url + path, max_size=WS_MAX_MESSAGE_BYTES, open_timeout=OPEN_TIMEOUT_S,
                             ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S, compression=COMPRESSION,
                             close_timeout=CLOSE_TIMEOUT_S)
    except InvalidStatus as exc:  # refused before accept: the worker is alive and taken
        raise WorkerRefused(f"worker {lease.worker_id} refused {path}: {exc}") from None
    except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
        lease.fail(f"connect {path}: {type(exc).__name__}: {exc}")
        return None


@asynccontextmanager
async def worker_session(
    dispatcher: Any,
    task_type: TaskType,
    path: str,
    *,
    on_update: Callable[[QueueUpdate], Awaitable[None]] | None = None,
    session_id: str | None = None,
    opening: Opening | None = None,
    on_assigned: Callable[[Lease], None] | None = None,
    max_new_tokens: int | None = None,
) -> AsyncIterator[tuple[Lease, ClientConnection, list[str | bytes]]]:
    """Lease a worker and open `path` on it, with the one connection policy. Yields the lease, the
    worker's socket and what `opening` (the protocol's first exchange, which may raise
    `WorkerRefused`) returned. Raises `Refused` when no worker could be had. `max_new_tokens`, when
    the request said it, is the chat's token budget for the ETA (budget.py)."""
    last_refusal = None
    for _ in range(ATTEMPTS):
        try:
            async with dispatcher.lease(task_type, on_update=on_update, session_id=session_id,
                                        max_new_tokens=max_new_tokens) as lease:
                if on_assigned is not None:
                    on_assigned(lease)
                upstream = None
                try:
                    upstream = await _connect(lease, path)
                    if upstream is None:
                        continue
                    first = await opening(upstream) if opening is not None else []
                except WorkerRefused as exc:
                    lease.refused(str(exc))
                    last_refusal = str(exc)
                    if upstream is not None:
                        await upstream.close()
                    continue
                try:
                    yield lease, upstream, first
                finally:
                    await upstream.close()
                return
        except QUEUE_REFUSALS as exc:
            raise Refused(refusal_for(exc)) from None
    message = f"Every worker tried was taken ({last_refusal}); please retry" if last_refusal else \
        "No worker could be reached; please retry"
    raise Refused(Refusal(reason=RefusalReason.no_worker, message=message, retry_after_s=1))


# ---- the client side ---------------------------------------------------------------------------
async def send_error(ws: WebSocket, text: str, code: str | None = None) -> None:
    """An `error` frame; a client that is already gone is not an error."""
    try:
        await ws.send_text(ErrorFrame(error=text, code=code).model_dump_json(exclude_none=True))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


async def close(ws: WebSocket, code: int, reason: str = "") -> None:
    if code in (1005, 1006, 1015):  # reserved: may not be sent in a close frame
        code = 1000
    with suppress(RuntimeError, OSError):
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            await ws.close(code=code, reason=reason[:120])


class ClientSession:
    """One accepted client WebSocket: its reader, its inbox and its life while queued.

    `run(main)` reads the client into `inbox` and runs `main`; if the client leaves before
    `relaying` is set (while queued, or before a worker was connected), `main` is cancelled at once
    and gives its place up. `on_stop` is the protocol's last word when the gateway stops."""

    def __init__(self, ws: WebSocket, on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        self.ws = ws
        self.inbox = Inbox()
        self.gone = asyncio.Event()
        self.on_stop = on_stop
        self.stopping = False
        self._main: asyncio.Task | None = None

    @property
    def relaying(self) -> bool:
        return self.inbox.relaying

    def start_relaying(self) -> None:
        self.inbox.relaying = True

    async def run(self, main: Awaitable[Any]) -> Any:
        tracker: SessionTracker | None = getattr(self.ws.app.state, "sessions", None)
        reader = asyncio.create_task(self._read())
        self._main = asyncio.ensure_future(main)
        gone = asyncio.create_task(self.gone.wait())
        if tracker is not None:
            tracker.add(self)
        try:
            await asyncio.wait({self._main, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not self._main.done() and not self.relaying:
                self._main.cancel()  # left while queued: give the place up now
            results = await asyncio.gather(self._main, return_exceptions=True)
            result = results[0]
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result
            return None if isinstance(result, BaseException) else result
        finally:
            if tracker is not None:
                tracker.discard(self)
            for task in (gone, reader, self._main):
                task.cancel()
            await asyncio.gather(gone, reader, self._main, return_exceptions=True)
            await close(self.ws, 1000)

    async def stop(self) -> None:
        """The gateway is stopping: tell the client why, then end the session (its worker is freed)."""
        self.stopping = True
        if self.on_stop is not None and not self.gone.is_set():
            with suppress(Exception):
                await self.on_stop()
        if self._main is not None and not self._main.done():
            self._main.cancel()
            await asyncio.gather(self._main, return_exceptions=True)
        await close(self.ws, 1012, "Gateway restarting")

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                frame = message.get("text")
                await self.inbox.put(frame if frame is not None else message.get("bytes") or b"")
        except InboxOverflow:
            await send_error(self.ws, "Too much data sent while queued; the session was closed")
            await close(self.ws, 1009, "Message too big")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.gone.set()
            await self.inbox.put(CLOSED)


class SessionTracker:
    """The live client sessions of this gateway, so that stopping ends each with a frame."""

    def __init__(self) -> None:
        self._sessions: set[ClientSession] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: ClientSession) -> None:
        self._sessions.add(session)

    def discard(self, session: ClientSession) -> None:
        self._sessions.discard(session)

    async def stop_all(self) -> int:
        """End every live session (each client gets its protocol's error first); returns how many."""
        sessions = list(self._sessions)
        await asyncio.gather(*(session.stop() for session in sessions), return_exceptions=True)
        return len(sessions)


# ---- HTTP --------------------------------------------------------------------------------------
async def wait_disconnect(request: Request) -> None:
    """Returns when the HTTP client goes away (call once the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---- the pass-through relay (the demo protocol's routes) ----------------------------------------
class Drop:
    """What an inspector returns for a client frame that is refused: `reason` goes back as an error."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason  # None: swallowed silently (e.g. diagnostics the gateway stores)


Inspect = Callable[[Lease, "str | bytes"], Awaitable["str | bytes | Drop"]]


async def relay(session: ClientSession, upstream: ClientConnection, lease: Lease, *, inspect: Inspect | None = None,
                first: list[str | bytes] | None = None, on_bad_frame: Callable[[], None] | None = None) -> None:
    """Relay both ways until one side ends, then end the other side as it should: a worker that
    dies or goes away mid-session gives the client an `error` frame (code `worker_lost`) and takes
    the worker out of rotation; a chat whose client left is not an ETA sample."""
    ws = session.ws
    session.start_relaying()
    to_worker = asyncio.create_task(_client_to_worker(session, upstream, lease, inspect, on_bad_frame))
    to_client = asyncio.create_task(_worker_to_client(ws, upstream, first or []))
    try:
        done, pending = await asyncio.wait({to_worker, to_client}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if to_client in done and to_client.exception() is not None:
            exc = to_client.exception()
            if not isinstance(exc, (WebSocketDisconnect, RuntimeError, OSError)):  # not just the client leaving
                log.error("relay from worker %s failed", lease.worker_id, exc_info=exc)
                lease.worker_error()
                await send_error(ws, f"Relay failed: {type(exc).__name__}")
                await close(ws, 1011, "Relay failed")
        elif to_client in done:
            code, reason = to_client.result()
            if code is None or code in GOING_AWAY:
                lease.fail(reason or f"worker closed with {code}")
                await send_error(ws, f"Worker {lease.worker_id} failed mid-session ({reason or code}); "
                                     "the session has ended, start a new one", code="worker_lost")
                await close(ws, 1011 if code is None else code, "Worker lost")
            else:
                if code not in (1000, 1001):
                    lease.worker_error()  # the worker ended the session with an error code: alive, but not a sample
                await close(ws, code, reason)
        elif to_worker.exception() is not None and isinstance(to_worker.exception(), ConnectionClosed):
            if to_worker.exception().rcvd is None:
                lease.fail(f"worker connection lost: {to_worker.exception()}")
                await send_error(ws, f"Worker {lease.worker_id} failed mid-session; the session has ended, "
                                     "start a new one", code="worker_lost")
                await close(ws, 1011, "Worker lost")
        elif to_worker.exception() is None and lease.task_type in (TaskType.chat, TaskType.streaming):
            lease.abort("client_left")  # the client closed mid-chat
    finally:
        # Also when this relay is cancelled: no relay task may outlive it with an unread exception.
        for task in (to_worker, to_client):
            task.cancel()
        await asyncio.gather(to_worker, to_client, return_exceptions=True)


async def _client_to_worker(session: ClientSession, upstream: ClientConnection, lease: Lease, inspect: Inspect | None,
                            on_bad_frame: Callable[[], None] | None) -> None:
    while True:
        frame = await session.inbox.get()
        if isinstance(frame, Closed):
            return
        if inspect is not None:
            checked = await inspect(lease, frame)
            if isinstance(checked, Drop):
                if checked.reason is not None:
                    if on_bad_frame is not None:
                        on_bad_frame()
                    await send_error(session.ws, checked.reason, code="bad_frame")
                continue
            frame = checked
        await upstream.send(frame)


async def _worker_to_client(ws: WebSocket, upstream: ClientConnection, first: list[str | bytes]) -> tuple[int | None, str]:
    """Relay until the worker closes; returns its close code (None: no close frame, it died) and reason."""
    try:
        for message in first:
            await _forward(ws, message)
        async for message in upstream:
            await _forward(ws, message)
    except ConnectionClosed as exc:
        if exc.rcvd is None:  # no close frame: the connection dropped (process died, network cut)
            return None, "connection lost without a close frame"
    return upstream.close_code or 1000, upstream.close_reason or ""


async def _forward(ws: WebSocket, message: str | bytes) -> None:
    if isinstance(message, str):
        await ws.send_text(message)
    else:
        await ws.send_bytes(message)
