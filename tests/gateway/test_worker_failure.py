"""Workers that die: mid-session, or before the gateway ever reaches them."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fixtures.processes import free_port, launch_worker, wait_until

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


def recv(ws, timeout: float = 10.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def test_a_worker_that_dies_mid_session_ends_it_with_an_error_and_leaves_rotation(start_worker, start_gateway):
    doomed, spare = start_worker(zero_delay=True), start_worker(zero_delay=True)
    gateway = start_gateway([doomed, spare])
    with connect(f"{gateway.ws_url}/ws/duplex/omni_doomed") as ws:
        assert recv(ws) == {"type": "queue_done"}
        ws.send(json.dumps({"type": "prepare"}))
        while recv(ws)["type"] != "prepared":
            pass
        audio = base64.b64encode(np.zeros(16000, np.float32).tobytes()).decode()
        ws.send(json.dumps({"type": "audio_chunk", "audio_base64": audio}))
        assert recv(ws)["type"] == "result"
        doomed.kill()  # SIGKILL: no close frame, the TCP connection just drops
        frames = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frames.append(recv(ws))
        assert frames[-1]["type"] == "error" and "failed mid-session" in frames[-1]["error"]
        assert closed.value.rcvd.code == 1011
    workers = {w["port"]: w for w in gateway.get("/workers").json()["workers"]}
    assert workers[doomed.port]["status"] == "offline"
    assert gateway.get("/status").json()["running_tasks"] == []
    response = httpx.post(f"{gateway.url}/api/chat", json=CHAT, timeout=10)
    assert response.status_code == 200  # served by the spare


def test_a_worker_that_refuses_connections_is_skipped_and_the_request_still_served(start_worker, start_gateway):
    live = start_worker(zero_delay=True)
    dead = f"127.0.0.1:{free_port()}"
    gateway = start_gateway([dead, live.address])
    for _ in range(3):
        assert httpx.post(f"{gateway.url}/api/chat", json=CHAT, timeout=10).status_code == 200
    statuses = {w["port"]: w["status"] for w in gateway.get("/workers").json()["workers"]}
    assert statuses[int(dead.split(":")[1])] == "offline"


def test_a_worker_restarted_on_its_address_is_readmitted_within_the_fast_probe_interval(start_worker, start_gateway, tmp_path):
    worker = start_worker(zero_delay=True)
    gateway = start_gateway([worker])
    worker.kill()
    status = lambda: gateway.get("/workers").json()["workers"][0]["status"]  # noqa: E731
    wait_until(lambda: status() == "offline", 10, "the dead worker to go offline")
    # The fixture's port is taken from its own argument list; ours, given last, wins.
    reborn = launch_worker(tmp_path, zero_delay=True, args=["--port", str(worker.port)], wait=False)
    try:
        wait_until(lambda: status() == "idle", 30, "the restarted worker to be re-admitted")
        assert httpx.post(f"{gateway.url}/api/chat", json=CHAT, timeout=10).status_code == 200
    finally:
        reborn.kill()
