"""The queue seen by real clients: one simulated worker, a gateway with a small queue and timeout."""

from __future__ import annotations

import json
import threading
from contextlib import ExitStack, contextmanager

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fixtures.processes import wait_until, worker_behind_gateway

QUEUE_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("queue")
    with worker_behind_gateway(log_dir, ["--max-queue-size", "2", "--timeout", str(QUEUE_TIMEOUT_S)]) as pair:
        yield pair


@pytest.fixture
def gateway(small):
    _, gateway = small
    wait_until(lambda: gateway.get("/status").json()["idle_workers"] == 1, 10, "an idle worker")
    return gateway


def recv(ws, timeout: float = 10.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


@contextmanager
def holding_the_worker(gateway):
    with connect(f"{gateway.ws_url}/ws/duplex/omni_holder") as ws:
        assert recv(ws) == {"type": "queue_done"}
        yield ws


def queue_length(gateway) -> int:
    return gateway.get("/api/queue").json()["queue_length"]


def test_a_second_client_is_queued_then_served_with_its_early_frames_delivered(gateway):
    with holding_the_worker(gateway) as holder, connect(f"{gateway.ws_url}/ws/duplex/omni_second") as second:
        second.send(json.dumps({"type": "prepare", "system_prompt": "sent while queued"}))
        queued = recv(second)
        assert queued["type"] == "queued" and queued["position"] == 1 and queued["queue_length"] == 1
        assert queued["ticket_id"].startswith("q_") and queued["estimated_wait_s"] >= 0
        ticket = gateway.get(f"/api/queue/{queued['ticket_id']}").json()
        assert ticket["found"] and ticket["ticket"]["request_type"] == "omni_duplex" and ticket["ticket"]["position"] == 1
        holder.close()
        assert recv(second) == {"type": "queue_done"}
        assert recv(second)["type"] == "prepared"  # the frame sent while queued reached the worker


def test_positions_move_up_at_once_when_a_client_ahead_leaves(gateway):
    with holding_the_worker(gateway), connect(f"{gateway.ws_url}/ws/half_duplex/hdx_first") as first:
        assert recv(first)["position"] == 1
        with connect(f"{gateway.ws_url}/ws/half_duplex/hdx_second") as second:
            assert recv(second)["position"] == 2
            first.close()  # leaves while queued
            update = recv(second, timeout=2.0)  # pushed on the change, not on a 3-s timer
            assert update["type"] == "queue_update" and update["position"] == 1 and update["queue_length"] == 1
            assert queue_length(gateway) == 1
    wait_until(lambda: queue_length(gateway) == 0, 5, "the queue to empty")


def test_a_full_queue_answers_503_with_retry_after_over_http_and_an_error_frame_over_ws(gateway):
    with holding_the_worker(gateway), ExitStack() as stack:
        waiting = [stack.enter_context(connect(f"{gateway.ws_url}/ws/duplex/omni_w{i}")) for i in range(2)]
        for ws in waiting:
            assert recv(ws)["type"] == "queued"
        response = httpx.post(f"{gateway.url}/api/chat", json={"messages": [{"role": "user", "content": "x"}]}, timeout=10)
        assert response.status_code == 503
        assert response.json() == {"detail": "Queue full (2 requests)"}
        assert int(response.headers["retry-after"]) >= 1
        with connect(f"{gateway.ws_url}/ws/duplex/omni_late") as late:
            assert recv(late) == {"type": "error", "error": "Queue full (2 requests)"}
            with pytest.raises(ConnectionClosed) as closed:
                late.recv(timeout=5)
            assert closed.value.rcvd.code == 1013


def test_a_ticket_waiting_longer_than_the_request_timeout_gets_an_error(gateway):
    with holding_the_worker(gateway):
        with connect(f"{gateway.ws_url}/ws/duplex/omni_patient") as ws:
            assert recv(ws)["type"] == "queued"
            frames = []
            while not frames or frames[-1]["type"] != "error":
                frames.append(recv(ws, timeout=QUEUE_TIMEOUT_S + 5))
            assert "within 3 s" in frames[-1]["error"]
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd.code == 1013
        assert queue_length(gateway) == 0


def test_an_admin_cancel_tells_the_waiting_client(gateway):
    with holding_the_worker(gateway):
        with connect(f"{gateway.ws_url}/ws/duplex/omni_cancelme") as ws:
            ticket = recv(ws)["ticket_id"]
            assert httpx.delete(f"{gateway.url}/api/queue/{ticket}").json() == {"success": True}
            assert recv(ws) == {"type": "error", "error": "Cancelled"}
            assert httpx.delete(f"{gateway.url}/api/queue/{ticket}").json() == {"success": False}


def test_an_http_chat_client_that_gives_up_while_queued_frees_its_place(gateway):
    with holding_the_worker(gateway):
        def impatient() -> None:
            try:
                httpx.post(f"{gateway.url}/api/chat", json={"messages": [{"role": "user", "content": "x"}]}, timeout=0.5)
            except httpx.TimeoutException:
                pass

        thread = threading.Thread(target=impatient)
        thread.start()
        wait_until(lambda: queue_length(gateway) == 1, 5, "the chat to queue")
        thread.join()
        wait_until(lambda: queue_length(gateway) == 0, 2, "the abandoned ticket to leave the queue")


def test_ws_chat_sends_queue_frames_only_to_clients_that_ask(gateway):
    request = json.dumps({"messages": [{"role": "user", "content": "x"}], "streaming": False})
    with holding_the_worker(gateway) as holder:
        with connect(f"{gateway.ws_url}/ws/chat?queue_events=1") as asking, connect(f"{gateway.ws_url}/ws/chat") as plain:
            asking.send(request)
            queued = recv(asking)
            assert queued["type"] == "queued" and queued["position"] == 1
            plain.send(request)
            wait_until(lambda: queue_length(gateway) == 2, 5, "both chats queued")
            holder.close()
            assert recv(asking) == {"type": "queue_done"}
            assert recv(asking)["type"] == "prefill_done"
            assert recv(plain, timeout=20)["type"] == "prefill_done"  # no queue frame before the worker's
