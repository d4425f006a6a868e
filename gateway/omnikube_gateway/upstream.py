"""Per-worker keep-alive HTTP clients: a lean `http1.Pool` for chat requests, httpx for the rest.

Chat requests are the hot path, so they go through `http1` (one write per request, C parsing):
httpx cost more CPU per relayed chat than everything else in the gateway together. Health probes
and anything else keep httpx, which is cheap enough at their rate.

Each worker has its own pool rather than one pool over all workers: a single httpx pool made each
request scan every pooled connection (httpcore re-checks them all when assigning a request), so
per-request CPU grew with the number of workers. A worker only ever has a chat request and a probe
in flight, so its own pools stay tiny. Both are made on first use and closed when the worker is
forgotten or moves to a new address.
"""

from __future__ import annotations

import asyncio
import socket

import httpx

from .http1 import Pool

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
        self._pools: dict[str, tuple[str, Pool]] = {}
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

    def pool(self, worker_id: str, base_url: str) -> Pool:
        """The worker's chat pool; `base_url` is `http://host:port` as the registry gives it."""
        entry = self._pools.get(worker_id)
        if entry is not None and entry[0] == base_url:
            return entry[1]
        if entry is not None:
            entry[1].close()
        url = httpx.URL(base_url)
        pool = Pool(url.host, url.port or 80, connect_timeout=self._timeout.connect or 3.0)
        self._pools[worker_id] = (base_url, pool)
        return pool

    def discard(self, worker_id: str) -> None:
        entry = self._clients.pop(worker_id, None)
        if entry is not None:
            self._close_later(entry[1])
        pool = self._pools.pop(worker_id, None)
        if pool is not None:
            pool[1].close()

    async def aclose(self) -> None:
        for _, pool in self._pools.values():
            pool.close()
        self._pools.clear()
        clients = [client for _, client in self._clients.values()]
        self._clients.clear()
        await asyncio.gather(*(client.aclose() for client in clients), *self._closing, return_exceptions=True)

    def _close_later(self, client: httpx.AsyncClient) -> None:
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
