"""Every proxied protocol end to end: a real gateway process in front of simulated worker processes."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fixtures.processes import wait_until

SECOND_OF_AUDIO = base64.b64encode(np.zeros(16000, np.float32).tobytes()).decode()
CHAT = {"messages": [{"role": "user", "content": "hello"}]}


def recv(ws, timeout: float = 10.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws, kind: str, timeout: float = 10.0) -> list[dict]:
    frames = []
    while True:
        frames.append(recv(ws, timeout))
        if frames[-1]["type"] == kind:
            return frames


def test_http_chat_returns_the_worker_answer_with_the_queue_fields(one):
    _, gateway = one
    response = httpx.post(f"{gateway.url}/api/chat", json=CHAT, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["simulated"] is True and "hello" in body["text"]
    assert isinstance(body["queue_wait_ms"], int) and body["estimated_queue_wait_s"] == 0.0


def test_http_chat_passes_a_worker_error_status_through_instead_of_200(one):
    _, gateway = one
    response = httpx.post(f"{gateway.url}/api/chat", json={"messages": []}, timeout=10)
    assert response.status_code == 422
    assert "detail" in response.json()


def test_http_chat_with_a_body_that_is_not_a_json_object_is_a_400(one):
    _, gateway = one
    for body in (b"not json", b"[1, 2]", b'{"broken": '):
        response = httpx.post(f"{gateway.url}/api/chat", content=body, headers={"content-type": "application/json"}, timeout=10)
        assert response.status_code == 400, body
        assert response.json()["detail"] == "Request body must be a JSON object"


def test_ws_chat_streams_prefill_chunks_and_done_then_closes(one):
    _, gateway = one
    with connect(f"{gateway.ws_url}/ws/chat") as ws:
        ws.send(json.dumps({**CHAT, "streaming": True}))
        frames = recv_until(ws, "done")
        assert frames[0]["type"] == "prefill_done"
        assert any(f["type"] == "chunk" for f in frames)
        assert frames[-1]["text"] == "".join(f.get("text_delta", "") for f in frames if f["type"] == "chunk")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1000


def test_half_duplex_sends_queue_done_first_and_relays_the_session(one):
    worker, gateway = one
    with connect(f"{gateway.ws_url}/ws/half_duplex/hdx_test1") as ws:
        ws.send(json.dumps({"type": "prepare", "system_content": [{"type": "text", "text": "hi"}]}))
        assert recv(ws) == {"type": "queue_done"}
        prepared = recv_until(ws, "prepared")[-1]
        assert prepared["session_id"] == "hdx_test1"
        wait_until(lambda: worker.health()["current_session_id"] == "hdx_test1", 5, "worker to see the session")
        ws.send(json.dumps({"type": "stop"}))


@pytest.mark.parametrize("session_id, request_type", [("omni_abc", "omni_duplex"), ("adx_abc", "audio_duplex")])
def test_duplex_relays_prepare_audio_pause_resume_and_stop(one, session_id, request_type):
    _, gateway = one
    with connect(f"{gateway.ws_url}/ws/duplex/{session_id}") as ws:
        assert recv(ws) == {"type": "queue_done"}
        ws.send(json.dumps({"type": "prepare", "system_prompt": "hi"}))
        assert recv_until(ws, "prepared")[-1]["type"] == "prepared"
        ws.send(json.dumps({"type": "audio_chunk", "audio_base64": SECOND_OF_AUDIO}))
        assert recv_until(ws, "result")[-1]["is_listen"] in (True, False)
        running = gateway.get("/api/queue").json()["running_tasks"]
        assert [t["request_type"] for t in running] == [request_type]
        ws.send(json.dumps({"type": "pause"}))
        assert recv_until(ws, "paused")[-1]["type"] == "paused"
        assert gateway.get("/workers").json()["workers"][0]["status"] == "duplex_paused"
        ws.send(json.dumps({"type": "resume"}))
        recv_until(ws, "resumed")
        assert gateway.get("/workers").json()["workers"][0]["status"] == "duplex_active"
        ws.send(json.dumps({"type": "stop"}))
        recv_until(ws, "stopped")
    wait_until(lambda: gateway.get("/status").json()["idle_workers"] == 1, 5, "worker released")


def test_a_non_json_duplex_frame_gets_an_error_and_the_session_goes_on(one):
    _, gateway = one
    with connect(f"{gateway.ws_url}/ws/duplex/omni_bad") as ws:
        recv(ws)  # queue_done
        ws.send("this is not json")
        assert recv(ws)["type"] == "error"
        ws.send(b"\x00\x01")
        assert recv(ws)["type"] == "error"
        ws.send(json.dumps({"type": "prepare"}))
        assert recv_until(ws, "prepared")[-1]["type"] == "prepared"


def test_client_diagnostics_are_kept_by_the_gateway_not_forwarded(one):
    _, gateway = one
    with connect(f"{gateway.ws_url}/ws/duplex/omni_diag") as ws:
        recv(ws)
        ws.send(json.dumps({"type": "client_diagnostic", "note": "x"}))
        ws.send(json.dumps({"type": "prepare"}))
        assert recv_until(ws, "prepared")[-1]["type"] == "prepared"  # the worker saw no unknown type
    diag = gateway.data_dir / "diag" / "diag_omni_diag.jsonl"
    wait_until(diag.exists, 5, "diagnostics file")
    record = json.loads(diag.read_text().splitlines()[0])
    assert record["note"] == "x" and "_server_recv_ts" in record


def test_legacy_streaming_is_relayed(one):
    _, gateway = one
    with connect(f"{gateway.ws_url}/ws/streaming") as ws:
        ws.send(json.dumps({"type": "prefill", "session_id": "s", "messages": CHAT["messages"]}))
        assert recv_until(ws, "prefill_done")[-1]["type"] == "prefill_done"
        ws.send(json.dumps({"type": "generate", "session_id": "s"}))
        assert recv_until(ws, "done")[-1]["type"] == "done"


def test_a_duplex_session_the_client_ends_by_closing_is_a_normal_eta_sample(one):
    _, gateway = one
    samples = lambda: gateway.get("/api/config/eta").json()["ema_audio_duplex_samples"]  # noqa: E731
    before = samples()
    with connect(f"{gateway.ws_url}/ws/duplex/adx_closes") as ws:
        recv(ws)
        ws.send(json.dumps({"type": "prepare"}))
        recv_until(ws, "prepared")
    wait_until(lambda: samples() == before + 1, 10, "the session's duration to be recorded")
