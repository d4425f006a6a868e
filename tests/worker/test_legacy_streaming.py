"""Legacy WS /ws/streaming and POST /streaming/stop, as the original's black-box tests use them."""

from __future__ import annotations

import pytest

from omnikube_worker.settings import SimOptions

from tests.fixtures.worker_app import status_of, wait_for


def until_done(ws) -> list[dict]:
    frames = [ws.receive_json()]
    while frames[-1]["type"] not in ("done", "error"):
        frames.append(ws.receive_json())
    return frames


def test_prefill_generate_done_with_the_original_fields(client):
    with client.websocket_connect("/ws/streaming") as ws:
        ws.send_json({"type": "prefill", "session_id": "s1", "clear_kv_cache": True,
                      "messages": [{"role": "user", "content": "Hello!"}]})
        prefill = ws.receive_json()
        assert status_of(client) == "busy_streaming"
        ws.send_json({"type": "generate", "session_id": "s1"})
        frames = until_done(ws)
        ws.send_json({"type": "close"})
    assert prefill["type"] == "prefill_done" and prefill["message_count"] == 1 and prefill["prompt_length"] == 6
    assert prefill["cached_tokens"] == 0 and prefill["input_tokens"] > 0
    chunks, done = frames[:-1], frames[-1]
    assert chunks[-1]["is_final"] is True and [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert done["session_id"] == "s1" and done["stopped"] is False and isinstance(done["elapsed_ms"], float)
    assert set(done["token_stats"]) == {"cached_tokens", "input_tokens", "generated_tokens", "total_tokens"}
    wait_for(lambda: status_of(client) == "idle", "idle after done")


def test_multi_turn_reuses_the_cache_across_prefills(client):
    with client.websocket_connect("/ws/streaming") as ws:
        ws.send_json({"type": "prefill", "clear_kv_cache": True, "messages": [{"role": "user", "content": "One"}]})
        first = ws.receive_json()
        ws.send_json({"type": "generate", "generate_audio": False})
        reply = until_done(ws)
        text = "".join(c["text_delta"] or "" for c in reply[:-1])
        ws.send_json({"type": "prefill", "is_last_chunk": False, "messages": [{"role": "assistant", "content": text}]})
        assistant = ws.receive_json()
        ws.send_json({"type": "prefill", "messages": [{"role": "user", "content": "Two"}]})
        second = ws.receive_json()
        ws.send_json({"type": "close"})
    assert assistant["cached_tokens"] > first["input_tokens"]
    assert second["cached_tokens"] == assistant["input_tokens"] < second["input_tokens"]


def generating(ws) -> None:
    """Prefill one turn and return once `generate` has streamed its first chunk."""
    ws.send_json({"type": "prefill", "messages": [{"role": "user", "content": "talk"}]})
    ws.receive_json()
    ws.send_json({"type": "generate"})
    assert ws.receive_json()["type"] == "chunk"


def test_http_streaming_stop_interrupts_generate(worker_client):
    client = worker_client(sim=SimOptions.zero_delay(tokens_per_s=20.0, words_per_chunk=1))
    with client.websocket_connect("/ws/streaming") as ws:
        generating(ws)
        assert client.post("/streaming/stop").json() == {"success": True, "message": "Stop signal sent"}
        done = until_done(ws)[-1]
        ws.send_json({"type": "close"})
    assert done["stopped"] is True


def test_stop_message_interrupts_generate(worker_client):
    client = worker_client(sim=SimOptions.zero_delay(tokens_per_s=20.0, words_per_chunk=1))
    with client.websocket_connect("/ws/streaming") as ws:
        generating(ws)
        ws.send_json({"type": "stop"})
        assert until_done(ws)[-1]["stopped"] is True
        ws.send_json({"type": "close"})


@pytest.mark.parametrize("frame, error", [
    ({"type": "generate"}, "Not prefilled"),
    ({"type": "rewind"}, "Unknown message type: rewind"),
    ({"type": "prefill", "messages": [{"role": "user", "content": [{"type": "image", "data": "eA=="}]}]},
     "not a decodable image"),
])
def test_bad_frames_get_an_error(client, frame, error):
    with client.websocket_connect("/ws/streaming") as ws:
        ws.send_json(frame)
        reply = ws.receive_json()
        ws.send_json({"type": "close"})
    assert reply["type"] == "error" and error in reply["error"]
    wait_for(lambda: status_of(client) == "idle", "idle after a bad frame")


def test_streaming_stop_without_a_session_says_so(client):
    assert client.post("/streaming/stop").json() == {"success": False, "message": "No active streaming session"}
