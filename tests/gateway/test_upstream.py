"""Per-worker HTTP clients: a stale keep-alive connection is retried, a slow probe is forgiven once.

In process, against tiny raw-socket servers that misbehave in exactly one way.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx

from omnikube_gateway import proxy_http
from omnikube_gateway.health import TIMEOUTS_TO_OFFLINE, HealthProber
from omnikube_gateway.registry import OFFLINE, WorkerRegistry
from omnikube_gateway.upstream import WorkerClients
from tests.fixtures.gateway import health_report

ANSWER = b'{"success":true,"text":"hi"}'
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)


async def read_request(reader: asyncio.StreamReader) -> bool:
    """Reads one request (headers and content-length body); False at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return True


async def serve(handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def fake_lease(url: str) -> SimpleNamespace:
    failures: list[str] = []
    return SimpleNamespace(worker_id="w0", http_url=url, queue_wait_s=0.0, estimated_wait_s=0.0,
                           fail=failures.append, worker_error=lambda: failures.append("error"), failures=failures)


async def test_a_kept_alive_connection_the_worker_dropped_is_retried_on_a_fresh_one_without_failing_the_worker():
    connections = []

    async def handler(reader, writer):
        connections.append(writer)
        # Answer the first request of a connection, then drop the connection on the next one:
        # the race of a worker closing an idle keep-alive connection just as it is reused.
        if await read_request(reader):
            writer.write(RESPONSE)
            await writer.drain()
        await read_request(reader)
        writer.close()

    server, url = await serve(handler)
    clients = WorkerClients(httpx.Timeout(5.0))
    state = SimpleNamespace(worker_clients=clients, settings=SimpleNamespace(request_timeout=5.0))
    try:
        lease = fake_lease(url)
        for _ in range(2):
            response = await proxy_http._call_worker(state, lease, b'{"messages":[]}')
            assert response is not None and response.status_code == 200
            assert response.body.startswith(b'{"success":true,"text":"hi","queue_wait_ms":0')
        assert lease.failures == []
        assert len(connections) == 2
    finally:
        await clients.aclose()
        server.close()


async def test_a_probe_that_times_out_takes_a_healthy_worker_offline_only_after_consecutive_timeouts():
    async def silent(reader, writer):
        await reader.read()  # accepts the connection, never answers

    server, url = await serve(silent)
    port = int(url.rsplit(":", 1)[1])
    registry = WorkerRegistry()
    worker = registry.upsert("w0", "127.0.0.1", port, 0)
    registry.apply_probe("w0", 0.0, health_report("idle"))
    clients = WorkerClients(httpx.Timeout(5.0))
    prober = HealthProber(registry, clients, interval=5.0, fast_interval=0.5, timeout=0.2)
    try:
        for _ in range(TIMEOUTS_TO_OFFLINE - 1):
            await prober.probe(worker)
            assert worker.healthy and worker.status == "idle"
        await prober.probe(worker)
        assert not worker.healthy and worker.status == OFFLINE
    finally:
        await clients.aclose()
        server.close()


async def test_a_refused_probe_takes_the_worker_offline_at_once():
    server, url = await serve(lambda reader, writer: None)
    port = int(url.rsplit(":", 1)[1])
    server.close()
    await server.wait_closed()
    registry = WorkerRegistry()
    worker = registry.upsert("w0", "127.0.0.1", port, 0)
    registry.apply_probe("w0", 0.0, health_report("idle"))
    clients = WorkerClients(httpx.Timeout(5.0))
    try:
        await HealthProber(registry, clients, interval=5.0, fast_interval=0.5, timeout=0.5).probe(worker)
        assert worker.status == OFFLINE
    finally:
        await clients.aclose()


async def test_a_forgotten_worker_s_client_is_closed():
    registry = WorkerRegistry()
    clients = WorkerClients(httpx.Timeout(5.0))
    registry.on_worker_removed = lambda worker: clients.discard(worker.worker_id)
    worker = registry.upsert("w0", "127.0.0.1", 1, 0)
    client = clients.get("w0", worker.http_url)
    registry.remove("w0")
    await clients.aclose()
    assert client.is_closed
