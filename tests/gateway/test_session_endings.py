"""How sessions through the gateway end when something other than the client ends them: a worker
that stops, a gateway that stops, a worker another gateway replica holds, and frames too deep to
parse. Each time the client gets a frame it can act on, and no worker is left busy."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fixtures.processes import GatewayProc, WorkerProc, wait_until

DEEP = "[" * 200_000 + "]" * 200_000  # too large for the gateway to parse: the worker sees it
SHALLOW_BUT_DEEP = "[" * 30_000 + "]" * 30_000  # small enough for the gateway's own look


def recv(ws: ClientConnection, timeout: float = 15.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def until_closed(ws: ClientConnection) -> tuple[list[dict], int]:
    frames = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(recv(ws))
    return frames, closed.value.rcvd.code if closed.value.rcvd else None


@contextmanager
def open_duplex(gateway: GatewayProc, sid: str) -> Iterator[ClientConnection]:
    """A prepared /ws/duplex session through the gateway."""
    with connect(f"{gateway.ws_url}/ws/duplex/{sid}", max_size=2**27) as ws:
        assert recv(ws) == {"type": "queue_done"}
        ws.send(json.dumps({"type": "prepare"}))
        assert recv(ws)["type"] == "prepared"
        yield ws


def test_a_duplex_client_whose_worker_stops_gets_a_worker_lost_error_frame(start_worker, start_gateway):
    worker = start_worker(zero_delay=True)
    gateway = start_gateway([worker])
    with open_duplex(gateway, "adx_lost") as ws:
        worker.stop()  # SIGTERM, as when its pod is deleted: the worker closes with 1012
        frames, code = until_closed(ws)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "worker_lost"
    assert code == 1012  # "service restart": the client may start a new session


def test_a_stopping_gateway_ends_each_live_session_with_an_error_frame_and_frees_the_worker(start_worker, start_gateway):
    worker = start_worker(zero_delay=True)
    gateway = start_gateway([worker])
    with open_duplex(gateway, "adx_stop") as ws:
        gateway.stop()  # SIGTERM
        frames, code = until_closed(ws)
    assert frames == [{"type": "error", "error": frames[0]["error"], "code": "gateway_stopping"}]
    assert code == 1012
    worker.wait_status("idle")


def test_a_stopping_gateway_tells_a_realtime_client_too(start_worker, start_gateway):
    worker = start_worker(zero_delay=True)
    gateway = start_gateway([worker])
    with connect(f"{gateway.ws_url}/v1/realtime?mode=audio") as ws:
        assert recv(ws)["type"] == "session.queue_done"
        ws.send(json.dumps({"type": "session.update", "session": {}}))
        assert recv(ws)["type"] == "session.created"
        gateway.stop()
        frames, code = until_closed(ws)
    assert [f["type"] for f in frames] == ["error", "session.closed"]
    assert frames[0]["error"]["code"] == "gateway_stopping"
    worker.wait_status("idle")


def test_two_gateways_over_one_worker_never_double_book_it(start_worker, start_gateway):
    worker = start_worker(zero_delay=True)
    first = start_gateway([worker])
    # The second gateway probes rarely: it still believes the worker idle when its client comes,
    # so only the worker's own refusal keeps the two sessions apart.
    second = start_gateway([worker], args=["--health-interval", "3600"])
    with open_duplex(first, "adx_first") as holder:
        with connect(f"{second.ws_url}/ws/duplex/adx_second") as waiter:
            queued = recv(waiter)
            assert queued["type"] == "queued" and queued["position"] == 1
            assert worker.health()["current_session_id"].endswith("adx_first")
            holder.send(json.dumps({"type": "stop"}))
            assert recv(holder)["type"] == "stopped"
            while (frame := recv(waiter))["type"] == "queue_update":
                pass
            assert frame == {"type": "queue_done"}
            waiter.send(json.dumps({"type": "prepare"}))
            assert recv(waiter)["type"] == "prepared"
            assert worker.health()["current_session_id"].endswith("adx_second")


@pytest.fixture
def duplex_gateway(gateway_with_worker) -> tuple[WorkerProc, GatewayProc]:
    worker, gateway = gateway_with_worker
    worker.wait_status("idle")
    return worker, gateway


@pytest.mark.parametrize("frame", [DEEP, SHALLOW_BUT_DEEP], ids=["parsed-by-the-worker", "parsed-by-the-gateway"])
def test_a_too_deep_frame_on_ws_duplex_gets_an_error_frame_and_the_session_goes_on(duplex_gateway, frame):
    worker, gateway = duplex_gateway
    with open_duplex(gateway, "adx_deep") as ws:
        ws.send(frame)
        error = recv(ws)
        ws.send(json.dumps({"type": "stop"}))
        assert recv(ws)["type"] == "stopped"
    assert error["type"] == "error" and "nested too deeply" in error["error"]
    worker.wait_status("idle")


def test_a_too_deep_frame_on_v1_realtime_is_the_clients_error(duplex_gateway):
    worker, gateway = duplex_gateway
    with connect(f"{gateway.ws_url}/v1/realtime?mode=audio", max_size=2**27) as ws:
        assert recv(ws)["type"] == "session.queue_done"
        ws.send(DEEP)
        frames, _ = until_closed(ws)
    assert frames[0]["type"] == "error"
    assert frames[0]["error"]["code"] == "invalid_json" and frames[0]["error"]["type"] == "client_error"
    worker.wait_status("idle")


def test_a_chat_sent_to_a_worker_another_gateway_holds_waits_in_the_queue_and_is_served(start_worker, start_gateway):
    worker = start_worker(zero_delay=True)
    first = start_gateway([worker])
    second = start_gateway([worker], args=["--health-interval", "3600"])  # still believes the worker idle
    with ThreadPoolExecutor(1) as pool, open_duplex(first, "adx_holder") as holder:
        chat = pool.submit(httpx.post, f"{second.url}/api/chat", json={"messages": [{"role": "user", "content": "hi"}]},
                           timeout=60)
        # The worker answers 429 after its busy grace; the second gateway queues the chat instead of failing it.
        wait_until(lambda: second.get("/api/queue").json()["queue_length"] == 1, 30, "the chat to be queued")
        holder.send(json.dumps({"type": "stop"}))
        assert recv(holder)["type"] == "stopped"
        answer = chat.result(timeout=30)
    assert answer.status_code == 200 and answer.json()["success"] is True
