"""One small keep-alive HTTP client per worker, for chat requests and health probes.

A single httpx pool over every worker costs each request a scan of every pooled connection
(httpcore re-checks them all when assigning a request), so per-request CPU grew with the number of
workers. A worker only ever has a chat request and a probe in flight, so its own pool stays tiny.
A client is made on first use and closed when the worker is forgotten or moves to a new address.
"""

from __future__ import annotations

import asyncio
import socket

import httpx

# TCP_NODELAY: httpx writes headers and body separately; with Nagle's algorithm the body would wait
# for the worker's delayed ACK (~40 ms per request).
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=4)


class WorkerClients:
    def __init__(self, timeout: httpx.Timeout):
        self._timeout = timeout
        # httpx would build (and load CA certificates into) a fresh SSL context per client: 60 ms of
        # CPU each, seconds with hundreds of workers. Workers speak plain HTTP; one context will do.
        self._ssl = httpx.create_ssl_context()
        self._clients: dict[str, tuple[str, httpx.AsyncClient]] = {}
        self._closing: set[asyncio.Task] = set()

    def get(self, worker_id: str, base_url: str) -> httpx.AsyncClient:
        entry = self._clients.get(worker_id)
        if entry is not None and entry[0] == base_url:
            return entry[1]
        if entry is not None:
            self._close_later(entry[1])
        client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(verify=self._ssl, socket_options=_SOCKET_OPTIONS, limits=_LIMITS),
                                   timeout=self._timeout)
        self._clients[worker_id] = (base_url, client)
        return client

    def discard(self, worker_id: str) -> None:
        entry = self._clients.pop(worker_id, None)
        if entry is not None:
            self._close_later(entry[1])

    async def aclose(self) -> None:
        clients = [client for _, client in self._clients.values()]
        self._clients.clear()
        await asyncio.gather(*(client.aclose() for client in clients), *self._closing, return_exceptions=True)

    def _close_later(self, client: httpx.AsyncClient) -> None:
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
