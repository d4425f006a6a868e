"""The gateway's HTTP/1.1 protocol: uvicorn's httptools protocol, with `POST /api/chat` served in place.

Why: profiled under 16 closed-loop chat clients (py-spy, docs/gateway.md "Proxy performance"), a
third of the gateway's CPU per relayed chat was not the chat at all but the ASGI machinery around
it: uvicorn's request cycle and its `send` (the answer's head and body written in two writes),
Starlette's and FastAPI's middleware stack (error, body-limit and telemetry wrappers) and routing.
This protocol keeps uvicorn for everything (parsing, keep-alive, pipelining, WebSocket upgrades,
TLS, graceful shutdown) and changes one thing: a `POST /api/chat` request is handed straight to
`proxy_http.chat`, the route's own handler, with its own auth dependency, and the `Response` it
returns is written as one `write` of head and body. Statuses, headers and JSON error bodies are
therefore the route's, by construction. Anything else, and a chat request that arrives pipelined
behind another request or asks for `Expect: 100-continue`, goes through uvicorn and the ASGI app
as before (where the same route serves it).
"""

from __future__ import annotations

import asyncio
import logging

import httptools
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from . import proxy_http
from .auth import require_api_key

log = logging.getLogger("omnikube_gateway")

CHAT_PATH = b"/api/chat"
_INTERNAL_ERROR = Response("Internal Server Error", status_code=500, media_type="text/plain")


class _ChatExchange:
    """One chat request on a connection. It stands in for uvicorn's request cycle, whose attributes
    the base protocol touches (`response_complete`, `keep_alive`, `disconnected`, `message_event`,
    `body`, `more_body`), and it is the ASGI `receive` the handler reads the body through."""

    __slots__ = ("response_complete", "keep_alive", "disconnected", "more_body", "body", "truncated",
                 "message_event", "_body_ready", "_gone")

    def __init__(self, loop: asyncio.AbstractEventLoop, keep_alive: bool) -> None:
        self.response_complete = False
        self.keep_alive = keep_alive
        self.disconnected = False
        self.more_body = True
        self.body = b""
        self.truncated = False
        self.message_event = self  # the base protocol calls message_event.set() on disconnect
        self._body_ready = loop.create_future()
        self._gone = loop.create_future()

    def add_body(self, chunk: bytes, limit: int) -> None:
        if self.truncated:
            return
        self.body += chunk
        if len(self.body) > limit:  # keep just enough for the handler to see it is too large
            self.body, self.truncated = self.body[:limit + 1], True

    def body_done(self) -> None:
        self.more_body = False
        if not self._body_ready.done():
            self._body_ready.set_result(None)

    def set(self) -> None:
        """uvicorn's disconnect signal: the connection was lost."""
        if self.disconnected:
            if not self._gone.done():
                self._gone.set_result(None)
            self.body_done()

    async def receive(self) -> dict:
        if not self._body_ready.done():
            await asyncio.shield(self._body_ready)
        if self.body is not None and not self.disconnected:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.shield(self._gone)
        return {"type": "http.disconnect"}


class ChatProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; `POST /api/chat` bypasses the ASGI stack (see the module doc)."""

    gateway: FastAPI  # set on the class made by `protocol_for`

    def on_headers_complete(self) -> None:
        if (self.parser.get_method() == b"POST" and not self.expect_100_continue and not self.parser.should_upgrade()
                and (self.cycle is None or self.cycle.response_complete)):
            parsed = httptools.parse_url(self.url)
            if parsed.path == CHAT_PATH and not self.root_path:
                self._start_chat(parsed.query or b"")
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is _ChatExchange:
            cycle.add_body(body, proxy_http.CHAT_BODY_LIMIT)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is _ChatExchange:
            cycle.body_done()
        else:
            super().on_message_complete()

    def _start_chat(self, query: bytes) -> None:
        scope = self.scope
        http_version = self.parser.get_http_version()
        scope.update(method="POST", path="/api/chat", raw_path=CHAT_PATH, query_string=query, app=self.gateway)
        if http_version != "1.1":
            scope["http_version"] = http_version
        exchange = _ChatExchange(self.loop, http_version != "1.0" and self.parser.should_keep_alive())
        self.cycle = exchange  # type: ignore[assignment]
        task = self.loop.create_task(self._serve_chat(scope, exchange))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _serve_chat(self, scope: dict, exchange: _ChatExchange) -> None:
        request = Request(scope, exchange.receive)
        try:
            try:
                await require_api_key(request)
                response = await proxy_http.chat(request)
            except HTTPException as exc:
                response = await http_exception_handler(request, exc)
        except ClientDisconnect:
            return  # gone before its body was in: nobody to answer
        except Exception:  # noqa: BLE001 - what uvicorn does for an ASGI app that raised
            log.exception("Exception in the chat handler")
            response, exchange.keep_alive = _INTERNAL_ERROR, False
        self._write(exchange, response)

    def _write(self, exchange: _ChatExchange, response: Response) -> None:
        exchange.response_complete = True
        if exchange.more_body:
            exchange.keep_alive = False  # answered before the whole body came: the rest is not a request
        if exchange.disconnected or self.transport.is_closing():
            return
        parts = [STATUS_LINE[response.status_code]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in response.raw_headers:
            parts += (name, b": ", value, b"\r\n")
        if not exchange.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", response.body)
        self.transport.write(b"".join(parts))
        if not exchange.keep_alive:
            self.transport.close()
        self.on_response_complete()


def protocol_for(app: FastAPI) -> type[ChatProtocol]:
    """The protocol class to give uvicorn (`http=`) for this gateway app."""
    return type("GatewayHttpProtocol", (ChatProtocol,), {"gateway": app})
