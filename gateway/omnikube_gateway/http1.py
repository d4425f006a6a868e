"""A minimal keep-alive HTTP/1.1 client for relaying chat requests: one small pool per worker.

Why not httpx on this path: relaying one `POST /api/chat`, httpx (client -> httpcore -> anyio
streams -> h11, all in Python) was more than half of the gateway's CPU. Here a request is one
`write` on an asyncio `Protocol` (TCP_NODELAY) and the answer is parsed by httptools (llhttp, in
C). It speaks only to our own workers, so it does only what they need: plain HTTP, a request body
in memory, an answer buffered whole (Content-Length, chunked, or read until the worker closes). No
redirects, cookies, proxies or compression.

`Pool.request` raises, by what the caller should do about it:
- `ConnectFailed`: no connection could be made (refused, unreachable, connect timeout); nothing was
  sent, so the worker is down and the request can go elsewhere.
- `UpstreamTimeout`: no complete answer within the request's deadline.
- `ResponseTooLarge`: the answer's body exceeds the pool's limit.
- `UpstreamError` (the base class) for anything else: a malformed answer, a connection closed
  before or during the answer.
A kept-alive connection that turns out closed before any byte of the answer (the worker closed it
while idle, just as it was reused) is retried once on a fresh connection inside `request`, so only
send requests that are safe to repeat (a one-shot chat has no side effect).
"""

from __future__ import annotations

import asyncio
import socket

import httptools

SMALL_BODY = 64 * 1024     # up to this size, head and body go out in a single write
WRITE_CHUNK = 1024 * 1024  # larger bodies go in slices, waiting whenever the socket buffer is full
MAX_HEADER_BYTES = 64 * 1024
MAX_IDLE = 4               # a worker runs one chat at a time: a few idle connections are plenty


class UpstreamError(Exception):
    """The request failed; see the subclasses for the cases a caller treats differently."""


class ConnectFailed(UpstreamError):
    """No connection to the worker could be made; nothing was sent."""


class UpstreamTimeout(UpstreamError):
    """No complete answer within the deadline."""


class ResponseTooLarge(UpstreamError):
    """The answer's body is larger than the pool accepts."""


class _Stale(UpstreamError):
    """The connection closed before any byte of the answer arrived."""


class Answer:
    __slots__ = ("status", "body")

    def __init__(self, status: int, body: bytes):
        self.status = status
        self.body = body


class _Connection(asyncio.Protocol):
    """One TCP connection, one request at a time; `exchange` sends it and resolves with the answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body: int):
        self._loop = loop
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = False  # true once an answer completed on a connection the worker keeps open
        self._answer: asyncio.Future | None = None
        self._timeout = 0.0
        self._drained: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._started = False
        self._headers_done = False
        self._framed = False  # Content-Length or chunked; else the body ends when the worker closes

    # -- asyncio.Protocol --

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                # Most loops set it already; without it a body written apart from its head would
                # wait for the worker's delayed ACK (~40 ms).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes nobody asked for: this connection can no longer be trusted
            return
        self._started = True
        if not self._headers_done:
            self._head_size += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed answer: {exc}"))
            return
        if self._size > self._max_body:
            self._fail(ResponseTooLarge(f"answer larger than {self._max_body} bytes"))
        elif not self._headers_done and self._head_size > MAX_HEADER_BYTES:
            self._fail(UpstreamError(f"answer headers larger than {MAX_HEADER_BYTES} bytes"))

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        answer = self._answer
        if answer is not None and not answer.done():
            if self._headers_done and not self._framed:
                answer.set_result(Answer(self._status, b"".join(self._chunks)))
            elif not self._started:
                answer.set_exception(_Stale("connection closed before the answer"))
            else:
                answer.set_exception(UpstreamError("connection closed in the middle of the answer"))
        self._wake_writer()

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # -- httptools callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= self._max_body:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        answer = self._answer
        if answer is None or answer.done():
            self.close()  # a second answer to one request: the connection is out of step
            return
        if self._size > self._max_body:
            return
        self.keep_alive = self._parser.should_keep_alive()
        answer.set_result(Answer(self._status, b"".join(self._chunks)))

    # -- used by Pool --

    async def exchange(self, head: bytes, body: bytes, timeout: float) -> Answer:
        self._reset()
        self.keep_alive = False
        answer = self._answer = self._loop.create_future()
        self._timeout = timeout
        timer = self._loop.call_later(timeout, self._time_out)
        try:
            if len(body) <= SMALL_BODY:
                self.transport.write(head + body)
                return await answer
            if not await self._write_large(head, body, answer):
                # Answered before taking the whole body (an early error): the rest of the body
                # would be read as the next request, so this connection is not reused.
                self.close()
            return await answer
        finally:
            timer.cancel()
            self._answer = None
            if not answer.done() or answer.cancelled() or answer.exception() is not None:
                self.close()

    async def _write_large(self, head: bytes, body: bytes, answer: asyncio.Future) -> bool:
        """Writes in slices, never buffering much more than the socket holds; False if cut short."""
        self.transport.write(head)
        view = memoryview(body)
        for start in range(0, len(body), WRITE_CHUNK):
            if answer.done() or self.closed:
                return False  # the worker answered early or went away: the answer says which
            self.transport.write(view[start:start + WRITE_CHUNK])
            if self._drained is not None:
                await asyncio.wait({self._drained, answer}, return_when=asyncio.FIRST_COMPLETED)
        return True

    def _time_out(self) -> None:
        self._fail(UpstreamTimeout(f"no complete answer within {self._timeout:g} s"))

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def _wake_writer(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def close(self) -> None:
        self.closed = True
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one `host:port`, made on demand; at most `max_idle` kept idle."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 3.0,
                 max_response_bytes: int = 256 * 1024 * 1024, max_idle: int = MAX_IDLE):
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_response_bytes = max_response_bytes
        self.max_idle = max_idle
        self.closed = False
        self._idle: list[_Connection] = []
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._host_header = f"Host: {authority}\r\n".encode("latin-1")

    async def request(self, method: str, path: str, body: bytes = b"", *, timeout: float,
                      content_type: str = "application/json") -> Answer:
        if self.closed:
            raise UpstreamError("connection pool closed")
        head = (f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + self._host_header
                + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1"))
        conn, reused = await self._acquire()
        try:
            return await self._exchange(conn, head, body, timeout)
        except _Stale:
            if not reused:
                raise UpstreamError("the worker closed the connection without answering") from None
        conn, _ = await self._acquire(fresh=True)
        try:
            return await self._exchange(conn, head, body, timeout)
        except _Stale:
            raise UpstreamError("the worker closed the connection without answering") from None

    async def _exchange(self, conn: _Connection, head: bytes, body: bytes, timeout: float) -> Answer:
        try:
            return await conn.exchange(head, body, timeout)
        finally:
            if conn.keep_alive and not conn.closed and not self.closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                conn.close()

    async def _acquire(self, fresh: bool = False) -> tuple[_Connection, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()  # the most recently used: the least likely to have been closed
            if not conn.closed and not conn.transport.is_closing():
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(loop, self.max_response_bytes), self.host, self.port),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise ConnectFailed(f"no connection to {self.host}:{self.port} within {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectFailed(f"{self.host}:{self.port}: {exc.strerror or exc}") from None
        return conn, False

    def close(self) -> None:
        """Closes idle connections now; those in use close when their answer is in."""
        self.closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
