"""The lean chat client (`http1.Pool`): framing, keep-alive, and each way a worker can misbehave.

In process, against raw asyncio servers on loopback that answer in exactly one way each.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest

from omnikube_gateway import proxy_http
from omnikube_gateway.http1 import ConnectFailed, Pool, ResponseTooLarge, UpstreamError, UpstreamTimeout
from omnikube_gateway.upstream import WorkerClients
from tests.fixtures.gateway import until

from .test_upstream import ANSWER, RESPONSE, fake_lease, read_request, serve


class Server:
    """A loopback server that answers each request with `respond(request_index)` bytes (None: say
    nothing more and keep the connection open); counts connections and notices when they close."""

    def __init__(self, respond, *, close_after: bool = False):
        self.respond = respond
        self.close_after = close_after
        self.connections = 0
        self.closed = 0
        self.requests = 0
        self.bodies: list[int] = []

    async def __aenter__(self) -> "Server":
        self.server, url = await serve(self.handle)
        self.port = int(url.rsplit(":", 1)[1])
        return self

    async def __aexit__(self, exc_type, *exc) -> None:
        if exc_type is None:  # every connection ends with the test, so no handler is cut off at teardown
            await until(lambda: self.closed == self.connections, "the client to close every connection")
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await read_request(reader):
                self.requests += 1
                answer = self.respond(self.requests)
                if answer is None:
                    await reader.read()  # hang until the client gives up
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    return
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()


def pool_for(server: Server, **kwargs) -> Pool:
    return Pool("127.0.0.1", server.port, **kwargs)


async def test_content_length_answers_reuse_one_kept_alive_connection():
    async with Server(lambda i: RESPONSE) as server:
        pool = pool_for(server)
        for _ in range(3):
            answer = await pool.request("POST", "/chat", b'{"messages":[]}', timeout=5.0)
            assert (answer.status, answer.body) == (200, ANSWER)
        assert server.connections == 1 and server.requests == 3
        pool.close()


async def test_a_chunked_answer_is_assembled_whole():
    chunked = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"a\":\r\n3\r\n1}\n\r\n0\r\n\r\n")
    async with Server(lambda i: chunked) as server:
        pool = pool_for(server)
        answer = await pool.request("POST", "/chat", b"{}", timeout=5.0)
        assert (answer.status, answer.body) == (201, b'{"a":1}\n')
        await pool.request("POST", "/chat", b"{}", timeout=5.0)
        assert server.connections == 1
        pool.close()


async def test_an_answer_with_connection_close_is_not_reused():
    closing = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    async with Server(lambda i: closing, close_after=True) as server:
        pool = pool_for(server)
        for _ in range(2):
            answer = await pool.request("POST", "/chat", b"{}", timeout=5.0)
            assert answer.body == ANSWER
        assert server.connections == 2
        pool.close()


async def test_an_answer_without_length_ends_when_the_worker_closes():
    async with Server(lambda i: b"HTTP/1.1 200 OK\r\n\r\n" + ANSWER, close_after=True) as server:
        pool = pool_for(server)
        answer = await pool.request("POST", "/chat", b"{}", timeout=5.0)
        assert (answer.status, answer.body) == (200, ANSWER)
        pool.close()


async def test_a_kept_alive_connection_closed_while_idle_is_replaced_without_an_error():
    async with Server(lambda i: RESPONSE, close_after=True) as server:  # keep-alive promised, then closed
        pool = pool_for(server)
        await pool.request("POST", "/chat", b"{}", timeout=5.0)
        await until(lambda: server.closed == 1, "the server to close its first connection")
        answer = await pool.request("POST", "/chat", b"{}", timeout=5.0)
        assert answer.body == ANSWER and server.connections == 2
        pool.close()


async def test_a_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry_loop():
    async def hang_up(reader, writer):
        await read_request(reader)
        writer.close()

    server, url = await serve(hang_up)
    try:
        pool = Pool("127.0.0.1", int(url.rsplit(":", 1)[1]))
        with pytest.raises(UpstreamError, match="without answering"):
            await pool.request("POST", "/chat", b"{}", timeout=5.0)
    finally:
        server.close()


async def test_a_connection_closed_in_the_middle_of_the_answer_is_an_error():
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":"
    async with Server(lambda i: truncated, close_after=True) as server:
        with pytest.raises(UpstreamError, match="middle of the answer"):
            await pool_for(server).request("POST", "/chat", b"{}", timeout=5.0)


async def test_a_malformed_answer_is_an_error():
    async with Server(lambda i: b"SMTP ready\r\n\r\n") as server:
        with pytest.raises(UpstreamError, match="malformed"):
            await pool_for(server).request("POST", "/chat", b"{}", timeout=5.0)


async def test_a_worker_that_never_answers_times_out_and_its_connection_is_closed():
    async with Server(lambda i: None) as server:
        pool = pool_for(server)
        with pytest.raises(UpstreamTimeout):
            await pool.request("POST", "/chat", b"{}", timeout=0.2)
        await until(lambda: server.closed == 1, "the timed-out connection to be closed")


async def test_an_answer_over_the_size_limit_is_refused():
    big = b'{"audio":"' + b"A" * 5000 + b'"}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    async with Server(lambda i: answer) as server:
        with pytest.raises(ResponseTooLarge):
            await pool_for(server, max_response_bytes=1000).request("POST", "/chat", b"{}", timeout=5.0)


async def test_a_refused_connection_is_a_connect_failure():
    server, url = await serve(lambda reader, writer: None)
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectFailed):
        await Pool("127.0.0.1", int(url.rsplit(":", 1)[1])).request("POST", "/chat", b"{}", timeout=5.0)


async def test_a_body_of_several_megabytes_arrives_whole():
    received = []

    async def echo_length(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        received.append(body)
        text = b'{"length":%d}' % len(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
        await writer.drain()
        writer.close()

    server, url = await serve(echo_length)
    try:
        body = bytes(range(256)) * (5 * 4096)  # 5 MiB, more than a socket buffer holds
        answer = await Pool("127.0.0.1", int(url.rsplit(":", 1)[1])).request("POST", "/chat", body, timeout=10.0)
        assert answer.body == b'{"length":%d}' % len(body)
        assert received == [body]
    finally:
        server.close()



async def test_a_worker_that_answers_before_taking_a_large_body_gets_a_fresh_connection_next_time():
    connections, ended = [], []
    refusal = b'{"detail":"too large"}'

    async def refuse_early(reader, writer):
        connections.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: %d\r\n\r\n%s" % (len(refusal), refusal))
            await writer.drain()
            while await reader.read(1 << 20):  # keeps the connection open: only the client can tell it is unusable
                pass
        except ConnectionError:
            pass
        finally:
            ended.append(writer)

    server, url = await serve(refuse_early)
    try:
        pool = Pool("127.0.0.1", int(url.rsplit(":", 1)[1]))
        for _ in range(2):
            answer = await pool.request("POST", "/chat", b"x" * (20 * 1024 * 1024), timeout=10.0)
            assert (answer.status, answer.body) == (413, refusal)
        assert len(connections) == 2
        await until(lambda: len(ended) == 2, "the client to close both connections")
    finally:
        server.close()


async def test_discarding_a_worker_closes_its_idle_chat_connections():
    async with Server(lambda i: RESPONSE) as server:
        clients = WorkerClients(httpx.Timeout(5.0))
        pool = clients.pool("w0", f"http://127.0.0.1:{server.port}")
        await pool.request("POST", "/chat", b"{}", timeout=5.0)
        clients.discard("w0")
        await until(lambda: server.closed == 1, "the idle connection to be closed")
        assert clients.pool("w0", f"http://127.0.0.1:{server.port}") is not pool
        await clients.aclose()


async def test_a_worker_at_a_new_address_gets_a_new_pool():
    clients = WorkerClients(httpx.Timeout(5.0))
    first = clients.pool("w0", "http://127.0.0.1:1")
    second = clients.pool("w0", "http://[::1]:2")
    assert first.closed and (second.host, second.port) == ("::1", 2)
    await clients.aclose()
    assert second.closed


def proxy_state(clients: WorkerClients, request_timeout: float = 5.0) -> SimpleNamespace:
    return SimpleNamespace(worker_clients=clients, settings=SimpleNamespace(request_timeout=request_timeout))


async def test_a_chat_to_a_refused_worker_fails_the_lease_so_that_another_worker_is_tried():
    server, url = await serve(lambda reader, writer: None)
    server.close()
    await server.wait_closed()
    clients = WorkerClients(httpx.Timeout(5.0))
    lease = fake_lease(url)
    assert await proxy_http._call_worker(proxy_state(clients), lease, b"{}") is None
    assert len(lease.failures) == 1 and lease.failures[0].startswith("connect:")
    await clients.aclose()


async def test_a_chat_the_worker_does_not_answer_in_time_is_a_504_and_the_worker_stays_in_rotation():
    async with Server(lambda i: None) as server:
        clients = WorkerClients(httpx.Timeout(5.0))
        lease = fake_lease(f"http://127.0.0.1:{server.port}")
        response = await proxy_http._call_worker(proxy_state(clients, request_timeout=0.2), lease, b"{}")
        assert response.status_code == 504 and b"did not answer within 0.2 s" in response.body
        assert lease.failures == ["error"]  # worker_error, not fail(): it is alive, only slow
        await clients.aclose()


async def test_a_chat_answer_keeps_the_worker_s_status_and_gets_the_queue_fields_spliced_in():
    answer = b'{"success":false,"error":"bad audio"}'
    raw = b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
    async with Server(lambda i: raw) as server:
        clients = WorkerClients(httpx.Timeout(5.0))
        lease = fake_lease(f"http://127.0.0.1:{server.port}")
        response = await proxy_http._call_worker(proxy_state(clients), lease, b"{}")
        assert response.status_code == 422
        assert response.body == b'{"success":false,"error":"bad audio","queue_wait_ms":0,"estimated_queue_wait_s":0.0}'
        assert lease.failures == ["error"]
        await clients.aclose()
