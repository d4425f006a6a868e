"""WS /ws/chat: one request per connection, streamed (or not) reply, busy and bad-input answers."""

from __future__ import annotations

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.fixtures.worker_app import GatedBackend, decode_pcm, status_of, wait_for

REQUEST = {"messages": [{"role": "user", "content": "Tell me something."}], "streaming": True}


def receive_all(ws) -> list[dict]:
    frames = []
    while True:
        frames.append(ws.receive_json())
        if frames[-1]["type"] in ("done", "error"):
            return frames


def test_streaming_reply_is_prefill_done_then_chunks_then_done(client):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json({**REQUEST, "tts": {"enabled": True}})
        frames = receive_all(ws)
    assert frames[0]["type"] == "prefill_done" and isinstance(frames[0]["input_tokens"], int)
    chunks, done = frames[1:-1], frames[-1]
    assert chunks and all(f["type"] == "chunk" for f in chunks)
    assert done["type"] == "done" and done["text"] == "".join(c.get("text_delta", "") for c in chunks)
    assert done["generated_tokens"] > 0 and done["input_tokens"] == frames[0]["input_tokens"]
    assert done["simulated"] is True


def test_streamed_audio_is_raw_float32_pcm_with_keys_only_when_present(client):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json({**REQUEST, "tts": {"enabled": True}})
        chunks = [f for f in receive_all(ws) if f["type"] == "chunk"]
    samples = decode_pcm(chunks[0]["audio_data"])
    assert samples.size > 2400 and 0.05 < abs(samples).max() <= 1.0
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json(REQUEST)  # no TTS: no audio_data key at all
        chunks = [f for f in receive_all(ws) if f["type"] == "chunk"]
    assert chunks and all("audio_data" not in c and c["text_delta"] for c in chunks)


def test_non_streaming_reply_is_one_done_with_the_whole_audio(client):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json({**REQUEST, "streaming": False, "tts": {"enabled": True}})
        frames = receive_all(ws)
    assert [f["type"] for f in frames] == ["prefill_done", "done"]
    assert decode_pcm(frames[-1]["audio_data"]).size > 24000 * 0.5
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json({**REQUEST, "streaming": False})
        assert receive_all(ws)[-1]["audio_data"] is None


def test_max_new_tokens_caps_the_reply(client):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json({**REQUEST, "generation": {"max_new_tokens": 3}})
        assert receive_all(ws)[-1]["generated_tokens"] == 3


def test_worker_reports_busy_half_duplex_with_a_chat_ws_session_id_during_the_request(worker_client):
    backend = GatedBackend(gated=("stream_prefill",))
    client = worker_client(backend=backend)
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json(REQUEST)
        assert backend.entered.wait(5)
        health = client.get("/health").json()
        backend.gate.set()
        receive_all(ws)
    assert health["worker_status"] == "busy_half_duplex"
    assert health["current_session_id"].startswith("chat_ws_") and len(health["current_session_id"]) == 16
    wait_for(lambda: status_of(client) == "idle", "idle after /ws/chat")


@pytest.mark.timeout(20)
def test_a_second_request_gets_worker_busy_when_the_first_outlasts_the_busy_grace(worker_client):
    backend = GatedBackend(gated=("stream_prefill",))
    client = worker_client(backend=backend, busy_grace_s=0.2)
    with client.websocket_connect("/ws/chat") as first:
        first.send_json(REQUEST)
        assert backend.entered.wait(5)
        with client.websocket_connect("/ws/chat") as second:
            second.send_json(REQUEST)
            assert second.receive_json() == {"type": "error", "error": "Worker busy"}
        backend.gate.set()
        assert receive_all(first)[-1]["type"] == "done"


@pytest.mark.parametrize("frame, reason", [
    ("{nope", "malformed JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"messages": "hello"}', "messages"),
    ('{"messages": [{"role": "wizard", "content": "hi"}]}', "role"),
    ('{"messages": [{"role": "user", "content": [{"type": "video_game", "data": "x"}]}]}', "no usable content"),
    ('{"messages": [{"role": "user", "content": [{"type": "image", "data": "bm90IGFuIGltYWdl"}]}]}', "not a decodable image"),
])
def test_bad_requests_get_an_error_message_and_the_worker_stays_usable(client, frame, reason):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_text(frame)
        reply = ws.receive_json()
    assert reply["type"] == "error" and reason in reply["error"]
    wait_for(lambda: status_of(client) == "idle", "idle after a bad request")
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json(REQUEST)
        assert receive_all(ws)[-1]["type"] == "done"


def test_a_client_that_vanishes_mid_stream_frees_the_worker(worker_client):
    from omnikube_worker.settings import SimOptions

    client = worker_client(sim=SimOptions.zero_delay(tokens_per_s=50.0))
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json(REQUEST)
        assert ws.receive_json()["type"] == "prefill_done"
        assert ws.receive_json()["type"] == "chunk"
    wait_for(lambda: status_of(client) == "idle", "idle after the client left")
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json(REQUEST)
        assert receive_all(ws)[-1]["type"] == "done"


def test_a_model_failure_mid_stream_is_reported_and_the_worker_recovers(client):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json({**REQUEST, "sim_fault": "error"})
        frames = receive_all(ws)
    assert frames[-1]["type"] == "error" and "simulated model failure" in frames[-1]["error"]
    wait_for(lambda: status_of(client) == "idle", "idle after a model failure")


def test_not_ready_worker_closes_with_1013(worker_client):
    from tests.worker.test_health import SlowLoad

    backend = SlowLoad()
    client = worker_client(backend=backend, wait_idle=False)
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/ws/chat") as ws:
            ws.receive_json()
    backend.release.set()
    assert refused.value.code == 1013 and refused.value.reason == "Worker not ready"


def test_later_frames_on_the_socket_are_ignored(client):
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json(REQUEST)
        ws.send_json({"type": "anything"})
        assert receive_all(ws)[-1]["type"] == "done"

