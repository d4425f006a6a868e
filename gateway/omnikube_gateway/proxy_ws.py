"""WebSocket sessions relayed to workers: `/ws/chat`, `/ws/half_duplex/{id}`, `/ws/duplex/{id}`
and the legacy `/ws/streaming`.

One code path serves them all (`relay_session`); the routes only say which task type, which
worker path, whether queue frames are sent and which client frames get a look.

Compatibility kept: queue frames `queued` / `queue_update` / `queue_done` (half-duplex and duplex;
`queue_done` also on immediate assignment), `/ws/chat` without queue frames, the `adx_` prefix
choosing audio duplex on the raw id, the sanitised id sent to the worker, client frames sent while
queued delivered first and in order, `client_diagnostic` swallowed, pause/resume reflected in the
status. Fixed on purpose:

- The client socket is read from the first moment, so a client that leaves while queued gives its
  place up at once (the original noticed at the next 3-s update, or never on `/ws/chat`).
- Queue updates are sent when position or ETA change, not every 3 s.
- A binary or non-JSON frame gets an `error` frame and is dropped instead of ending the session.
- A worker that dies mid-session gives the client an `error` frame and close 1011, and leaves
  rotation at once; a worker that refuses the connection is replaced by another one.
- Worker frames up to 128 MiB in both directions; no keep-alive pings that could kill a session
  whose worker is busy computing; no per-message compression.

Back-pressure: each direction is one loop that awaits the send before the next receive, and the
client inbox holds at most `RELAY_WINDOW` frames once relaying (while queued, up to
`QUEUED_BUFFER_BYTES`), so a slow side slows the other instead of filling memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import quote

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from omnikube.protocol import AUDIO_DUPLEX_PREFIX, WS_MAX_MESSAGE_BYTES, TaskType, WsChatGeneration

from . import metrics
from .apps import disabled_reason
from .auth import authorize_websocket
from .budget import frame_tokens
from .dispatch import Lease, QueueCancelled, QueueFull, QueueTimeout, QueueUpdate
from .storage import sanitize_id

log = logging.getLogger(__name__)
router = APIRouter()

RELAY_WINDOW = 32
QUEUED_BUFFER_BYTES = 64 * 1024 * 1024
CONNECT_TIMEOUT_S = 8.0   # the worker itself waits up to 5 s for a previous session's cleanup
CONNECT_ATTEMPTS = 3
DIAG_MAX_BYTES = 4 * 1024 * 1024
SNIFF_CHARS = 256
PARSE_LIMIT = 64 * 1024
_TYPE = re.compile(r'"type"\s*:\s*"([A-Za-z_]+)"')


class _Closed:
    pass


CLOSED = _Closed()


class InboxOverflow(Exception):
    pass


class Inbox:
    """Client frames on their way to the worker. Unbounded in count but capped in bytes while the
    session is queued (frames must not be lost); a window of `RELAY_WINDOW` frames once relaying."""

    def __init__(self) -> None:
        self._items: deque = deque()
        self._bytes = 0
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self.relaying = False

    async def put(self, frame) -> None:
        if frame is CLOSED:
            pass  # the end marker never waits for room
        elif self.relaying:
            while len(self._items) >= RELAY_WINDOW:
                self._space.clear()
                await self._space.wait()
        elif self._bytes + len(frame) > QUEUED_BUFFER_BYTES:
            raise InboxOverflow()
        self._items.append(frame)
        self._bytes += 0 if frame is CLOSED else len(frame)
        self._readable.set()

    async def get(self):
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        frame = self._items.popleft()
        self._bytes -= 0 if frame is CLOSED else len(frame)
        self._space.set()
        return frame


@dataclass
class Route:
    task_type: TaskType
    worker_path: str            # e.g. "/ws/duplex?session_id=omni_x"
    app_id: str
    queue_frames: bool
    first_frame_before_queue: bool = False  # /ws/chat: the request frame comes before enqueueing
    inspect: Callable[[Lease, object], Awaitable[object | None]] | None = None


# -- routes ------------------------------------------------------------------------------------
@router.websocket("/ws/chat")
async def ws_chat(ws: WebSocket) -> None:
    # The original sends no queue frames here and its clients do not expect them; `?queue_events=1`
    # opts in to the same queued / queue_update / queue_done frames as the session routes.
    frames = ws.query_params.get("queue_events") in ("1", "true")
    await relay_session(ws, Route(TaskType.streaming, "/ws/chat", "turnbased", queue_frames=frames, first_frame_before_queue=True))


@router.websocket("/ws/streaming")
async def ws_streaming(ws: WebSocket) -> None:
    await relay_session(ws, Route(TaskType.streaming, "/ws/streaming", "turnbased", queue_frames=False))


@router.websocket("/ws/half_duplex/{session_id}")
async def ws_half_duplex(ws: WebSocket, session_id: str) -> None:
    sid = sanitize_id(session_id)
    await relay_session(
        ws, Route(TaskType.half_duplex, f"/ws/half_duplex?session_id={quote(sid)}", "half_duplex_audio", queue_frames=True, inspect=_binary_refused),
        session_id=sid,
    )


@router.websocket("/ws/duplex/{session_id}")
async def ws_duplex(ws: WebSocket, session_id: str) -> None:
    audio = session_id.startswith(AUDIO_DUPLEX_PREFIX)
    sid = sanitize_id(session_id)
    data_dir: Path = ws.app.state.settings.data_dir

    async def inspect(lease: Lease, frame):
        if isinstance(frame, bytes):
            return await _binary_refused(lease, frame)
        head = frame[:SNIFF_CHARS]
        match = _TYPE.search(head)
        kind = match.group(1) if match else None
        if kind is None and len(frame) <= PARSE_LIMIT:
            try:
                parsed = json.loads(frame)
                kind = parsed.get("type") if isinstance(parsed, dict) else None
                if not isinstance(parsed, dict):
                    raise ValueError("not an object")
            except ValueError:
                return _Refused("Frames must be JSON objects; this one was dropped")
        if kind == "pause":
            lease.pause()
        elif kind == "resume":
            lease.resume()
        elif kind == "client_diagnostic":
            await asyncio.to_thread(_append_diag, data_dir, sid, frame)
            return None
        return frame

    await relay_session(
        ws,
        Route(
            TaskType.audio_duplex if audio else TaskType.omni_duplex,
            f"/ws/duplex?session_id={quote(sid)}",
            "audio_duplex" if audio else "omni",
            queue_frames=True,
            inspect=inspect,
        ),
        session_id=sid,
    )


@dataclass
class _Refused:
    reason: str


async def _binary_refused(lease: Lease, frame):
    if isinstance(frame, bytes):
        return _Refused("Binary frames are not supported; send JSON text frames")
    return frame


def _append_diag(data_dir: Path, sid: str, frame: str) -> None:
    path = data_dir / "diag" / f"diag_{sid}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > DIAG_MAX_BYTES:
        return  # bounded: the original let these grow forever
    try:
        record = json.loads(frame)
    except ValueError:
        return
    record["_server_recv_ts"] = time.time()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# -- the one session path ----------------------------------------------------------------------
async def relay_session(ws: WebSocket, route: Route, *, session_id: str | None = None) -> None:
    if not await authorize_websocket(ws):
        return
    if not ws.app.state.apps.enabled(route.app_id):
        await ws.close(code=1008, reason=disabled_reason(route.app_id))
        return
    await ws.accept()
    inbox = Inbox()
    gone = asyncio.Event()
    reader = asyncio.create_task(_read_client(ws, inbox, gone))
    session = asyncio.create_task(_session(ws, route, inbox, session_id))
    gone_wait = asyncio.create_task(gone.wait())
    try:
        done, _ = await asyncio.wait({session, gone_wait}, return_when=asyncio.FIRST_COMPLETED)
        if session not in done and not inbox.relaying:
            session.cancel()  # left while queued (or before sending its request): free the place now
        await asyncio.gather(session, return_exceptions=True)
    finally:
        gone_wait.cancel()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        if ws.client_state == WebSocketState.CONNECTED:
            try:
                await ws.close()
            except RuntimeError:
                pass


async def _read_client(ws: WebSocket, inbox: Inbox, gone: asyncio.Event) -> None:
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            await inbox.put(frame)
    except InboxOverflow:
        await _send_error(ws, "Too much data sent while queued; the session was closed")
        await ws.close(code=1009, reason="Message too big")
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        gone.set()
        await inbox.put(CLOSED)


async def _session(ws: WebSocket, route: Route, inbox: Inbox, session_id: str | None) -> None:
    dispatcher = ws.app.state.dispatcher
    first = None
    if route.first_frame_before_queue:
        first = await inbox.get()
        if first is CLOSED:
            return

    async def on_update(update: QueueUpdate) -> None:
        if not route.queue_frames:
            return
        if not told["queued"]:
            told["queued"] = True
            await ws.send_json({"type": "queued", "position": update.position, "estimated_wait_s": update.eta_seconds,
                                "ticket_id": update.ticket_id, "queue_length": update.queue_length})
        else:
            await ws.send_json({"type": "queue_update", "position": update.position, "estimated_wait_s": update.eta_seconds,
                                "queue_length": update.queue_length})

    told = {"queued": False}
    tokens = frame_tokens(first, WsChatGeneration) if isinstance(first, (str, bytes)) else None  # for the ETA
    refusal = None
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            async with dispatcher.lease(route.task_type, on_update=on_update, session_id=session_id,
                                        max_new_tokens=tokens) as lease:
                upstream = await _connect(lease, route)
                if upstream is None:
                    continue  # lease.fail() was called: the next attempt gets another worker
                if route.queue_frames and not told.get("done"):
                    told["done"] = True
                    await ws.send_json({"type": "queue_done"})
                inbox.relaying = True
                await _relay(ws, upstream, inbox, lease, route, first)
                return
        except QueueFull as exc:
            full = f"Queue full ({exc.max_size} requests)" if route.queue_frames else "Queue full"
            await _send_error(ws, full)
            await _close(ws, 1013, "Queue full")
            return
        except QueueTimeout as exc:
            await _send_error(ws, str(exc))
            await _close(ws, 1013, "Queue timeout")
            return
        except QueueCancelled:
            await _send_error(ws, "Cancelled")
            await _close(ws, 1000, "Cancelled")
            return
        except _Refusal as exc:
            refusal = str(exc)
            continue
        except (WebSocketDisconnect, RuntimeError):
            return  # the client went away while we were telling it something
    if refusal:
        await _send_error(ws, refusal)
        await _close(ws, 1013, "Worker busy")
        return
    await _send_error(ws, "No worker could be reached; please retry")
    await _close(ws, 1013, "No worker available")


async def _connect(lease: Lease, route: Route) -> ClientConnection | None:
    url = lease.ws_url + route.worker_path
    try:
        return await connect(url, max_size=WS_MAX_MESSAGE_BYTES, open_timeout=CONNECT_TIMEOUT_S, ping_interval=None,
                             compression=None, close_timeout=2)
    except InvalidStatus as exc:
        # The worker answered but refused (e.g. 1013 busy, handshake 403): alive, so not marked dead.
        lease.worker_error()
        log.warning("worker %s refused %s: %s", lease.worker_id, route.worker_path, exc)
        raise _Refusal(f"Worker {lease.worker_id} refused the session: {exc}") from exc
    except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
        lease.fail(f"connect {route.worker_path}: {type(exc).__name__}: {exc}")
        return None


class _Refusal(Exception):
    pass


async def _relay(ws: WebSocket, upstream: ClientConnection, inbox: Inbox, lease: Lease, route: Route, first) -> None:
    to_worker = asyncio.create_task(_client_to_worker(ws, upstream, inbox, lease, route, first))
    to_client = asyncio.create_task(_worker_to_client(ws, upstream))
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
                await _send_error(ws, f"Relay failed: {type(exc).__name__}")
                await _close(ws, 1011, "Relay failed")
        elif to_client in done:
            code, reason, died = to_client.result()
            if died:
                lease.fail(reason)
                await _send_error(ws, f"Worker {lease.worker_id} failed mid-session ({reason}); the session has ended")
                await _close(ws, 1011, "Worker failed")
            else:
                if code not in (1000, 1001):
                    lease.worker_error()  # the worker ended the session with an error code: alive, but not a sample
                await _close(ws, code or 1000, reason or "")
        elif to_worker in done:
            result = to_worker.exception() or to_worker.result()
            if result == "client_closed" and route.task_type in (TaskType.chat, TaskType.streaming):
                lease.abort("client_left")
            elif isinstance(result, ConnectionClosed) and result.rcvd is None:
                lease.fail(f"worker connection lost: {result}")
                await _send_error(ws, f"Worker {lease.worker_id} failed mid-session; the session has ended")
                await _close(ws, 1011, "Worker failed")
    finally:
        # Also when this relay is cancelled: no relay task may outlive it with an unread exception
        # (a client that closes makes `_worker_to_client` raise WebSocketDisconnect).
        for task in (to_worker, to_client):
            task.cancel()
        await asyncio.gather(to_worker, to_client, return_exceptions=True)
        await upstream.close()


async def _client_to_worker(ws, upstream: ClientConnection, inbox: Inbox, lease: Lease, route: Route, first) -> str:
    if first is not None:
        await upstream.send(first)
    while True:
        frame = await inbox.get()
        if frame is CLOSED:
            return "client_closed"
        if route.inspect is not None:
            frame = await route.inspect(lease, frame)
            if frame is None:
                continue
            if isinstance(frame, _Refused):
                metrics.REQUESTS.labels(route.task_type.value, "bad_request").inc()
                await _send_error(ws, frame.reason)
                continue
        await upstream.send(frame)


async def _worker_to_client(ws: WebSocket, upstream: ClientConnection) -> tuple[int | None, str, bool]:
    """Relay until the worker closes; returns (close code, reason, whether the worker died)."""
    try:
        async for message in upstream:
            if isinstance(message, str):
                await ws.send_text(message)
            else:
                await ws.send_bytes(message)
    except ConnectionClosed as exc:
        if exc.rcvd is None:  # no close frame: the connection dropped (process died, network cut)
            return None, "connection lost without a close frame", True
    return upstream.close_code or 1000, upstream.close_reason or "", False


async def _send_error(ws: WebSocket, text: str) -> None:
    try:
        await ws.send_json({"type": "error", "error": text})
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if code in (1005, 1006, 1015):  # reserved: may not be sent in a close frame
        code = 1000
    try:
        if ws.client_state == WebSocketState.CONNECTED:
            await ws.close(code=code, reason=reason)
    except (RuntimeError, OSError):
        pass
