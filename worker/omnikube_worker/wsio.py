"""WebSocket plumbing shared by the session handlers: JSON frames in, JSON frames out.

Turns every way a frame can be wrong into `BadFrame` (with a message for the client) and every way
a client can vanish into `Disconnected`, so the handlers read as the protocol they implement.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from omnikube.protocol import WS_MAX_MESSAGE_BYTES, NotAJsonObject, loads_object

M = TypeVar("M", bound=BaseModel)


class Disconnected(Exception):
    """The client went away (or its socket broke)."""


class BadFrame(ValueError):
    """A frame the worker cannot use; the message is sent to the client as an `error`."""


async def receive_json(ws: WebSocket, timeout: float | None = None) -> dict[str, Any]:
    """Next frame as a JSON object. Raises Disconnected, BadFrame or asyncio.TimeoutError."""
    try:
        event = await asyncio.wait_for(ws.receive(), timeout) if timeout is not None else await ws.receive()
    except (WebSocketDisconnect, RuntimeError) as exc:
        raise Disconnected() from exc
    if event["type"] == "websocket.disconnect":
        raise Disconnected()
    text = event.get("text")
    if text is None:
        raise BadFrame("binary frames are not supported: send JSON text frames")
    if len(text) > WS_MAX_MESSAGE_BYTES:
        raise BadFrame(f"frame of {len(text)} bytes exceeds the limit of {WS_MAX_MESSAGE_BYTES} bytes")
    try:
        return loads_object(text)
    except NotAJsonObject as exc:
        raise BadFrame(str(exc)) from None


def parse(model: type[M], data: dict[str, Any], what: str) -> M:
    """Validate a frame against its model; the error names the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise BadFrame(f"invalid {what}: {loc + ': ' if loc else ''}{first.get('msg')}") from exc


async def send_json(ws: WebSocket, data: dict[str, Any]) -> None:
    try:
        await ws.send_text(json.dumps(data, ensure_ascii=False))
    except Exception as exc:  # the client is gone; each ASGI server says so differently
        raise Disconnected() from exc


async def send_error(ws: WebSocket, message: str) -> None:
    await send_json(ws, {"type": "error", "error": message})


async def close(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code=code, reason=reason)
        except Exception:  # already closing from the other side
            pass


class FrameReader:
    """Reads frames in the background so a `stop` is seen even while a reply is being generated.

    Frames (or the BadFrame / Disconnected that replaced them) queue up in order; a `stop` frame
    also sets `stop_flag` at once. Used by half duplex and legacy streaming, whose turns run long.
    """

    def __init__(self, ws: WebSocket, on_stop: Callable[[], None]) -> None:
        self._ws = ws
        self._on_stop = on_stop
        self._queue: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                frame: dict[str, Any] | Exception = await receive_json(self._ws)
            except BadFrame as exc:
                frame = exc
            except Disconnected as exc:
                self._on_stop()
                await self._queue.put(exc)
                return
            if isinstance(frame, dict) and frame.get("type") == "stop":
                self._on_stop()
            await self._queue.put(frame)

    async def next(self, timeout: float | None = None) -> dict[str, Any]:
        """Next frame; raises what replaced it (BadFrame, Disconnected) or asyncio.TimeoutError."""
        item = await asyncio.wait_for(self._queue.get(), timeout) if timeout is not None else await self._queue.get()
        if isinstance(item, Exception):
            if isinstance(item, Disconnected):
                await self._queue.put(item)  # stays disconnected for every later call
            raise item
        return item

    def cancel(self) -> None:
        self._task.cancel()
