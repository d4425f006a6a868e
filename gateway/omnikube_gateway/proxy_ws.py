"""WebSocket sessions relayed to workers: `/ws/chat`, `/ws/half_duplex/{id}`, `/ws/duplex/{id}`
and the legacy `/ws/streaming`: the demo protocol's translation onto `client_session`'s engine.

The routes say which task type, which worker path, whether queue frames are sent and which client
frames get a look; queueing, leaving while queued, refusals, the worker connection and the relay
are the engine's.

Compatibility kept: queue frames `queued` / `queue_update` / `queue_done` (half-duplex and duplex;
`queue_done` also on immediate assignment), `/ws/chat` without queue frames, the `adx_` prefix
choosing audio duplex on the raw id, the sanitised id sent to the worker, client frames sent while
queued delivered first and in order, `client_diagnostic` swallowed, pause/resume reflected in the
status. Fixed on purpose:

- A client that leaves while queued gives its place up at once (the original noticed at the next
  3-s update, or never on `/ws/chat`); queue updates are sent when position or ETA change.
- A binary or non-JSON frame gets an `error` frame and is dropped instead of ending the session.
- A worker that dies or stops mid-session gives the client an `error` frame (`code: worker_lost`)
  and leaves rotation at once; a worker that cannot be reached is replaced by another one, and a
  worker that is taken (another gateway replica's session) sends the request on or back into the queue.
- A stopping gateway ends each session with an `error` frame (`code: gateway_stopping`), close 1012.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection

from omnikube.protocol import AUDIO_DUPLEX_PREFIX, NotAJsonObject, RefusalReason, TaskType, WsChatGeneration, loads_object

from . import metrics
from .apps import disabled_reason
from .auth import authorize_websocket
from .budget import frame_tokens
from .client_session import (CLOSED, STOPPING_MESSAGE, ClientSession, Drop, Inspect, Refused, close, queue_frame, relay,
                             send_error, send_request, worker_session)
from .dispatch import Lease, QueueUpdate
from .storage import sanitize_id

router = APIRouter()

DIAG_MAX_BYTES = 4 * 1024 * 1024
SNIFF_CHARS = 256
PARSE_LIMIT = 64 * 1024
_TYPE = re.compile(r'"type"\s*:\s*"([A-Za-z_]+)"')


@dataclass
class Route:
    task_type: TaskType
    worker_path: str            # e.g. "/ws/duplex?session_id=omni_x"
    app_id: str
    queue_frames: bool
    first_frame_before_queue: bool = False  # /ws/chat: the request frame comes before enqueueing
    inspect: Inspect | None = None


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
                kind = loads_object(frame).get("type")
            except NotAJsonObject as exc:
                return Drop(f"Frames must be JSON objects ({exc}); this one was dropped")
        if kind == "pause":
            lease.pause()
        elif kind == "resume":
            lease.resume()
        elif kind == "client_diagnostic":
            await asyncio.to_thread(_append_diag, data_dir, sid, frame)
            return Drop()
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


async def _binary_refused(lease: Lease, frame):
    if isinstance(frame, bytes):
        return Drop("Binary frames are not supported; send JSON text frames")
    return frame


def _append_diag(data_dir: Path, sid: str, frame: str) -> None:
    path = data_dir / "diag" / f"diag_{sid}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > DIAG_MAX_BYTES:
        return  # bounded: the original let these grow forever
    try:
        record = loads_object(frame)
    except NotAJsonObject:
        return
    record["_server_recv_ts"] = time.time()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# -- the demo protocol on the engine -----------------------------------------------------------
async def relay_session(ws: WebSocket, route: Route, *, session_id: str | None = None) -> None:
    if not await authorize_websocket(ws):
        return
    if not ws.app.state.apps.enabled(route.app_id):
        await ws.close(code=1008, reason=disabled_reason(route.app_id))
        return
    await ws.accept()

    async def stopping() -> None:
        await send_error(ws, STOPPING_MESSAGE, code="gateway_stopping")

    session = ClientSession(ws, on_stop=stopping)
    await session.run(_session(session, route, session_id))


async def _session(session: ClientSession, route: Route, session_id: str | None) -> None:
    ws = session.ws
    first: list[str | bytes] = []
    if route.first_frame_before_queue:
        frame = await session.inbox.get()
        if frame is CLOSED:
            return
        first = [frame]
    told = {"queued": False}

    async def on_update(update: QueueUpdate) -> None:
        if route.queue_frames:
            await ws.send_text(queue_frame(update, first=not told["queued"]).model_dump_json(exclude_none=True))
            told["queued"] = True

    opening = functools.partial(_send_first, first[0]) if first else None
    tokens = frame_tokens(first[0], WsChatGeneration) if first else None  # for the ETA
    try:
        async with worker_session(ws.app.state.dispatcher, route.task_type, route.worker_path, on_update=on_update,
                                  session_id=session_id, opening=opening, max_new_tokens=tokens) as (lease, upstream, answers):
            if route.queue_frames:
                await ws.send_json({"type": "queue_done"})
            await relay(session, upstream, lease, inspect=route.inspect, first=answers,
                        on_bad_frame=metrics.REQUESTS.labels(route.task_type.value, "bad_request").inc)
    except Refused as refused:
        refusal = refused.refusal
        await send_error(ws, refusal.message)
        if refusal.reason is RefusalReason.cancelled:
            await close(ws, 1000, "Cancelled")
        else:
            await close(ws, 1013, refusal.message)
    except (WebSocketDisconnect, RuntimeError):
        return  # the client went away while we were telling it something


async def _send_first(request: str | bytes, upstream: ClientConnection) -> list[str | bytes]:
    return await send_request(upstream, request)
