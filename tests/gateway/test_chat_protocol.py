"""`POST /api/chat` on the gateway's own HTTP protocol (`http_server.ChatProtocol`) answers as the route.

A real gateway process with API keys in front of one zero-delay simulated worker; requests go over
real sockets, so they take the protocol's path rather than the ASGI one.
"""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from omnikube_gateway.proxy_http import CHAT_BODY_LIMIT
from tests.fixtures.processes import launch_gateway, launch_worker

KEY = "public-key-1"
CHAT = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("chat-protocol")
    (log_dir / "keys").write_text(f"{KEY}\n")
    worker = launch_worker(log_dir, zero_delay=True)
    try:
        gateway = launch_gateway(log_dir, [worker], args=["--api-keys-file", str(log_dir / "keys")])
    except BaseException:
        worker.kill()
        raise
    yield gateway
    gateway.kill()
    worker.kill()


def raw_exchange(gateway, data: bytes) -> bytes:
    """Send raw bytes, read until the gateway closes the connection."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_chat_without_a_valid_key_is_a_401_with_a_json_reason(keyed):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(f"{keyed.url}/api/chat", json=CHAT, headers=headers, timeout=10)
        assert response.status_code == 401 and response.json() == {"detail": "Missing or invalid API key"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_key_in_the_header_or_the_query_string_gets_the_worker_answer(keyed):
    for url, headers in ((f"{keyed.url}/api/chat", {"X-API-Key": KEY}), (f"{keyed.url}/api/chat?api_key={KEY}", {})):
        response = httpx.post(url, json=CHAT, headers=headers, timeout=10)
        assert response.status_code == 200 and "hello" in response.json()["text"]
        assert response.headers["content-type"] == "application/json"


def test_one_keep_alive_connection_carries_chats_and_other_requests_in_turn(keyed):
    with httpx.Client(headers={"X-API-Key": KEY}, timeout=10) as client:
        for _ in range(3):
            assert client.post(f"{keyed.url}/api/chat", json=CHAT).status_code == 200
            assert client.get(f"{keyed.url}/status").status_code == 200
            assert client.post(f"{keyed.url}/api/chat", content=b"[1]").status_code == 400


def test_pipelined_chats_are_answered_in_order_on_one_connection(keyed):
    body = json.dumps(CHAT).encode()
    request = (f"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    bad = (f"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: 3\r\n"
           "Connection: close\r\n\r\n[1]").encode()
    answer = raw_exchange(keyed, request + request + bad)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)  # each answer's body runs straight into the next head
    assert statuses == [b"200", b"200", b"400"]


def test_a_declared_oversized_body_is_a_413_at_once_and_the_connection_closes(keyed):
    head = (f"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
            f"Content-Length: {CHAT_BODY_LIMIT + 1}\r\n\r\n{{").encode()
    answer = raw_exchange(keyed, head)  # the body never comes: the answer must not wait for it
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 413")
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"detail": f"Chat request too large (max {CHAT_BODY_LIMIT} bytes)"}
    assert b"connection: close" in rest.lower()


def test_an_http_1_0_chat_is_answered_and_closed(keyed):
    body = json.dumps(CHAT).encode()
    answer = raw_exchange(keyed, (f"POST /api/chat HTTP/1.0\r\nX-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n")
                          .encode() + body)
    assert answer.startswith(b"HTTP/1.1 200") and b'"queue_wait_ms"' in answer


def test_other_methods_and_paths_still_reach_fastapi(keyed):
    assert httpx.get(f"{keyed.url}/api/chat", headers={"X-API-Key": KEY}, timeout=10).status_code == 405
    assert httpx.post(f"{keyed.url}/api/chat/", json=CHAT, headers={"X-API-Key": KEY}, timeout=10).status_code in (307, 404)
