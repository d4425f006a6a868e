"""WS /ws/half_duplex and POST /half_duplex/stop: VAD-cut voice turns on one KV cache."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.websockets import WebSocketDisconnect

from omnikube_worker.settings import SimOptions

from tests.fixtures.speech import speak, voiced_span
from tests.fixtures.worker_app import decode_pcm, pcm_b64, silence, status_of, tone, wait_for

UTTERANCE = "Good morning, how are you?"


def say(ws, text: str = UTTERANCE) -> None:
    """Half a second chunks, as the original client sends: speech, then enough silence to end it."""
    audio = np.concatenate([silence(0.25), speak(text), silence(0.75)])
    for start in range(0, audio.size, 8000):
        ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(audio[start:start + 8000])})


SLOW = SimOptions.zero_delay(tokens_per_s=20.0, words_per_chunk=1)  # a reply long enough to interrupt


def prepared_mid_reply(ws) -> None:
    """Prepare, speak one utterance, and return once the reply has started streaming."""
    ws.send_json({"type": "prepare"})
    ws.receive_json()
    say(ws)
    until(ws, "chunk")


def until(ws, kind: str) -> list[dict]:
    frames = []
    while not frames or frames[-1]["type"] != kind:
        frames.append(ws.receive_json())
    return frames


def test_prepare_answers_with_session_id_and_timeout(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare", "config": {"session": {"timeout_s": 120}}})
        prepared = ws.receive_json()
    assert prepared["type"] == "prepared" and prepared["session_id"] == "hd_1" and prepared["timeout_s"] == 120


def test_a_default_session_id_is_hdx_plus_8_hex(client):
    with client.websocket_connect("/ws/half_duplex") as ws:
        ws.send_json({"type": "prepare"})
        session_id = ws.receive_json()["session_id"]
    assert session_id.startswith("hdx_") and len(session_id) == 12


def test_a_turn_is_vad_on_vad_off_generating_chunks_final_chunk_turn_done(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        say(ws)
        frames = until(ws, "turn_done")
    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["vad_state", "vad_state", "generating"]
    assert frames[0]["speaking"] is True and frames[1]["speaking"] is False
    voice_start, voice_end = voiced_span(speak(UTTERANCE))
    assert abs(frames[2]["speech_duration_ms"] / 1000 - (voice_end - voice_start + 0.06)) < 0.3
    chunks = frames[3:-1]
    assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert chunks[-1]["is_final"] is True and chunks[-1]["text_delta"] is None and chunks[-1]["audio_data"] is None
    assert isinstance(chunks[-1]["duration_ms"], float)
    assert all(c["audio_sample_rate"] == 24000 and decode_pcm(c["audio_data"]).size > 0 for c in chunks[:-1])
    assert frames[-1]["turn_index"] == 1
    assert frames[-1]["text"] == "".join(c["text_delta"] for c in chunks[:-1])


def test_turn_index_counts_completed_turns_and_the_cache_grows(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        say(ws)
        first = until(ws, "turn_done")[-1]
        kv_after_first = client.get("/health").json()["kv_cache_length"]
        say(ws)
        second = until(ws, "turn_done")[-1]
        kv_after_second = client.get("/health").json()["kv_cache_length"]
    assert (first["turn_index"], second["turn_index"]) == (1, 2)
    assert kv_after_second > kv_after_first > 0


def test_tts_disabled_streams_text_without_audio(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare", "config": {"tts": {"enabled": False}}})
        ws.receive_json()
        say(ws)
        chunks = [f for f in until(ws, "turn_done") if f["type"] == "chunk" and not f["is_final"]]
    assert chunks and all(c["audio_data"] is None and c["text_delta"] for c in chunks)


def test_a_word_too_short_for_speech_is_reported_as_vad_off_without_a_turn(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare", "config": {"vad": {"min_speech_duration_ms": 1000}}})
        ws.receive_json()
        ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(np.concatenate([speak("Yes."), silence(0.7)]))})
        assert ws.receive_json() == {"type": "vad_state", "speaking": True}
        assert ws.receive_json() == {"type": "vad_state", "speaking": False}
        say(ws)
        assert until(ws, "turn_done")[-1]["turn_index"] == 1


def test_busy_status_and_session_id_during_the_session(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_9") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        health = client.get("/health").json()
    assert (health["worker_status"], health["current_session_id"]) == ("busy_half_duplex", "hd_9")


def test_stop_closes_without_a_reply_and_frees_the_worker(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        ws.send_json({"type": "stop"})
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    wait_for(lambda: status_of(client) == "idle", "idle after stop")


def test_stop_frame_mid_turn_stops_the_reply(worker_client):
    client = worker_client(sim=SLOW)
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        prepared_mid_reply(ws)
        ws.send_json({"type": "stop"})
        frames = until(ws, "turn_done")
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    assert not any(f.get("is_final") for f in frames)
    wait_for(lambda: status_of(client) == "idle", "idle after stop")


def test_http_stop_ends_the_reply_in_flight_but_turn_done_still_comes(worker_client):
    client = worker_client(sim=SLOW)
    assert client.post("/half_duplex/stop").json() == {"success": False, "message": "No active half-duplex session"}
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        prepared_mid_reply(ws)
        assert client.post("/half_duplex/stop").json() == {"success": True, "message": "Stop signal sent to 1 session(s)"}
        frames = until(ws, "turn_done")
        assert not any(f.get("is_final") for f in frames)
        say(ws)  # the session goes on: the next turn is complete
        assert until(ws, "turn_done")[-2]["is_final"] is True


@pytest.mark.parametrize("frame, error", [
    ('{"type": "audio_chunk", "audio_base64": "AAAAAA=="}', "Not prepared yet"),
    ('{"type": "sing"}', "Unknown type: sing"),
    ("not json", "malformed JSON"),
])
def test_bad_frames_get_an_error_and_the_session_continues(client, frame, error):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_text(frame)
        reply = ws.receive_json()
        assert reply["type"] == "error" and error in reply["error"]
        ws.send_json({"type": "prepare"})
        assert until(ws, "prepared")[-1]["session_id"] == "hd_1"


def test_undecodable_audio_gets_an_error(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        ws.send_json({"type": "audio_chunk", "audio_base64": "AAE="})
        assert "float32" in ws.receive_json()["error"]


def test_the_session_timeout_sends_elapsed_seconds_and_frees_the_worker(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare", "config": {"session": {"timeout_s": 0.2}}})
        ws.receive_json()
        timeout = ws.receive_json()
        assert timeout["type"] == "timeout" and timeout["elapsed_s"] >= 0.2
    wait_for(lambda: status_of(client) == "idle", "idle after the session timeout")


def test_a_second_half_duplex_session_is_refused_with_1013(client):
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("/ws/half_duplex?session_id=hd_2") as second:
                second.receive_json()
    assert refused.value.code == 1013


def test_a_client_that_vanishes_mid_turn_frees_the_worker(worker_client):
    client = worker_client(sim=SLOW)
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        prepared_mid_reply(ws)
    wait_for(lambda: status_of(client) == "idle", "idle after the client left")


def test_a_reference_voice_in_system_content_is_accepted(client):
    content = [{"type": "text", "text": "Speak softly."}, {"type": "audio", "data": pcm_b64(tone(1.0))},
               {"type": "image", "data": "ignored"}]
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare", "system_content": content})
        assert ws.receive_json()["type"] == "prepared"



def test_a_model_failure_during_prepare_is_reported_and_the_session_stays_open(worker_client):
    from omnikube_worker.simulated import SimulatedBackend

    class FailingPrefill(SimulatedBackend):
        async def stream_prefill(self, turns, options):
            raise RuntimeError("boom")

    client = worker_client(backend=FailingPrefill(SimOptions.zero_delay()))
    with client.websocket_connect("/ws/half_duplex?session_id=hd_1") as ws:
        ws.send_json({"type": "prepare"})
        assert ws.receive_json() == {"type": "error", "error": "prepare failed: RuntimeError: boom"}
        ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(silence(0.1))})
        assert ws.receive_json() == {"type": "error", "error": "Not prepared yet"}
    wait_for(lambda: status_of(client) == "idle", "idle after the session")
