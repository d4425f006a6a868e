"""WS /ws/duplex: prepare, results, pause/resume, the pause timeout, stop, busy and bad frames."""

from __future__ import annotations

import re
import threading

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.fixtures.worker_app import GatedBackend, decode_pcm, pcm_b64, png_b64, silence, status_of, tone, wait_for

RESULT_TYPES = {"is_listen": bool, "text": str, "end_of_turn": bool, "current_time": int, "server_send_ts": float,
                "wall_clock_ms": float, "kv_cache_length": int, "vision_slices": int, "vision_tokens": int}


def prepare(ws, **fields) -> dict:
    ws.send_json({"type": "prepare", **fields})
    return ws.receive_json()


def send_chunk(ws, samples, **fields) -> dict:
    ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(samples), **fields})
    return ws.receive_json()


def test_prepare_answers_prepared_with_the_prompt_length(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_abc") as ws:
        prepared = prepare(ws, system_prompt="Be brief.")
        health = client.get("/health").json()
    assert prepared["type"] == "prepared" and isinstance(prepared["prompt_length"], int)
    assert "recording_session_id" not in prepared  # recording is off for this worker
    assert re.fullmatch(r"\d{8}_\d{6}_adx_abc", health["current_session_id"])
    assert prepared["simulated"] is True


def test_every_chunk_gets_one_result_with_the_original_fields_and_types(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        results = [send_chunk(ws, silence()) for _ in range(3)]
    for index, result in enumerate(results, start=1):
        assert result["type"] == "result" and result["current_time"] == index
        for field, kind in RESULT_TYPES.items():
            assert isinstance(result[field], kind), field
        assert result["audio_data"] is None and result["is_listen"] is True


def test_the_model_listens_while_the_user_speaks_then_answers_with_24khz_audio_ending_the_turn(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        heard = [send_chunk(ws, tone()) for _ in range(4)]
        spoken = [send_chunk(ws, silence()) for _ in range(8)]
    assert all(r["is_listen"] for r in heard)
    speaking = [r for r in spoken if not r["is_listen"]]
    assert speaking and speaking[-1]["end_of_turn"] and not any(r["end_of_turn"] for r in speaking[:-1])
    assert "".join(r["text"] for r in speaking).startswith("[simulated] I heard you speak for 4.0 seconds")
    audio = decode_pcm(speaking[0]["audio_data"])
    assert audio.size == 24000 and abs(audio).max() > 0.05  # one second at 24 kHz, not silence
    assert spoken[-1]["is_listen"]


def test_the_first_force_listen_count_steps_always_listen(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws, config={"force_listen_count": 6})
        results = [send_chunk(ws, tone() if i == 0 else silence()) for i in range(8)]
    assert [r["is_listen"] for r in results][:6] == [True] * 6 and not results[6]["is_listen"]


def test_force_listen_on_a_chunk_keeps_the_model_quiet(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws, config={"force_listen_count": 0})
        send_chunk(ws, tone())
        assert send_chunk(ws, silence(), force_listen=True)["is_listen"] is True
        assert send_chunk(ws, silence())["is_listen"] is False


def test_omni_frames_are_counted_as_vision_slices_and_seen(client):
    with client.websocket_connect("/ws/duplex?session_id=omni_1") as ws:
        prepare(ws, config={"force_listen_count": 0})
        first = send_chunk(ws, tone(), frame_base64_list=[png_b64(64, 48)])
        answer = [send_chunk(ws, silence(), frame_base64_list=[png_b64(64, 48)], max_slice_nums=2)]
        while not answer[-1]["end_of_turn"]:
            answer.append(send_chunk(ws, silence()))
    assert (first["vision_slices"], first["vision_tokens"]) == (1, 64)
    assert (answer[0]["vision_slices"], answer[0]["vision_tokens"]) == (2, 128)
    assert "64x48 picture" in "".join(r["text"] for r in answer)


def test_status_is_duplex_active_then_paused_then_active_again(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        assert status_of(client) == "duplex_active"
        ws.send_json({"type": "pause"})
        assert ws.receive_json() == {"type": "paused", "timeout": 60.0}
        assert status_of(client) == "duplex_paused"
        ws.send_json({"type": "resume"})
        assert ws.receive_json() == {"type": "resumed"}
        assert status_of(client) == "duplex_active"
        assert send_chunk(ws, silence())["type"] == "result"


def test_pause_echoes_the_client_timeout(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_json({"type": "pause", "timeout": 12.5})
        assert ws.receive_json() == {"type": "paused", "timeout": 12.5}


def test_audio_while_paused_gets_worker_is_paused_and_the_session_continues(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_json({"type": "pause"})
        ws.receive_json()
        assert send_chunk(ws, silence()) == {"type": "error", "error": "Worker is paused"}
        ws.send_json({"type": "resume"})
        ws.receive_json()
        assert send_chunk(ws, silence())["type"] == "result"


def test_a_paused_duplex_session_that_times_out_releases_the_worker(worker_client):
    client = worker_client(pause_timeout=0.3)
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_json({"type": "pause"})
        assert ws.receive_json() == {"type": "paused", "timeout": 0.3}
        assert ws.receive_json() == {"type": "timeout", "reason": "Pause timeout (0.3s)"}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (1000, "Pause timeout")
    wait_for(lambda: status_of(client) == "idle", "the worker to be released")
    assert client.get("/health").json()["current_session_id"] is None


def test_resume_before_the_deadline_cancels_the_pause_timeout(worker_client):
    client = worker_client(pause_timeout=0.3)
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_json({"type": "pause"})
        ws.receive_json()
        ws.send_json({"type": "resume"})
        assert ws.receive_json() == {"type": "resumed"}
        # Long after the pause timeout would have fired, the session still answers.
        for _ in range(3):
            assert send_chunk(ws, silence(0.5))["type"] == "result"
        ws.send_json({"type": "stop"})
        assert ws.receive_json() == {"type": "stopped"}


def test_stop_answers_stopped_closes_and_frees_the_worker(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_json({"type": "stop"})
        assert ws.receive_json() == {"type": "stopped"}
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    wait_for(lambda: status_of(client) == "idle", "idle after stop")


def test_interrupt_is_a_no_op_answered_with_interrupted(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_json({"type": "interrupt"})
        assert ws.receive_json() == {"type": "interrupted"}


@pytest.mark.parametrize("frame, error", [
    ('{"type": "dance"}', "Unknown message type: dance"),
    ('{"type": "audio_chunk"}', "Missing audio_base64"),
    ('{"type": "resume"}', "Not paused"),
    ("{broken", "malformed JSON"),
    ('{"type": "audio_chunk", "audio_base64": "AAE="}', "not a whole number of float32 samples"),
    ('{"type": "audio_chunk", "audio_base64": "AAAAAA==", "frame_base64_list": ["bm9wZQ=="]}', "not a decodable image"),
    ('{"type": "pause", "timeout": -1}', "invalid pause"),
    ('{"type": "prepare", "config": {"temperature": 9}}', "invalid prepare: config.temperature"),
    ('{"type": "prepare", "config": {"sample_rate": 48000}}', "config.sample_rate"),
])
def test_bad_frames_get_an_error_and_the_session_stays_usable(client, frame, error):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_text(frame)
        reply = ws.receive_json()
        assert reply["type"] == "error" and error in reply["error"]
        assert send_chunk(ws, silence())["type"] == "result"


def test_a_binary_frame_gets_an_error_instead_of_killing_the_session(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_bytes(b"\x00\x01")
        assert "binary frames are not supported" in ws.receive_json()["error"]
        assert send_chunk(ws, silence())["type"] == "result"


def test_audio_before_prepare_is_refused_clearly(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        reply = send_chunk(ws, silence())
        assert reply["type"] == "error" and "send prepare" in reply["error"]
        prepare(ws)
        assert send_chunk(ws, silence())["type"] == "result"


def test_an_oversized_chunk_is_refused(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        reply = send_chunk(ws, silence(11))
        assert reply["type"] == "error" and "exceeds the limit" in reply["error"]


def test_a_client_that_vanishes_mid_session_frees_the_worker(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        send_chunk(ws, tone())
    wait_for(lambda: status_of(client) == "idle", "idle after the client left")
    with client.websocket_connect("/ws/duplex?session_id=adx_2") as ws:
        assert prepare(ws)["type"] == "prepared"


@pytest.mark.timeout(20)
def test_a_second_session_is_refused_with_1013_before_accept_after_the_busy_grace(worker_client):
    client = worker_client(busy_grace_s=0.2)
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("/ws/duplex?session_id=adx_2") as second:
                second.receive_json()
        assert send_chunk(ws, silence())["type"] == "result"  # the first session is untouched
    assert (refused.value.code, refused.value.reason) == (1013, "Worker busy: duplex_active")


def test_a_newcomer_waits_for_the_previous_sessions_cleanup_instead_of_being_refused(worker_client):
    backend = GatedBackend(gated=("duplex_close",))
    client = worker_client(backend=backend)
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws)
        ws.send_json({"type": "stop"})
        ws.receive_json()
    assert backend.entered.wait(5)  # the first session is now freeing its caches
    admitted = {}

    def second_session() -> None:
        with client.websocket_connect("/ws/duplex?session_id=adx_2") as ws:
            admitted["prepared"] = prepare(ws)["type"]

    thread = threading.Thread(target=second_session)
    thread.start()
    assert status_of(client) == "duplex_active"
    backend.gated = ()
    backend.gate.set()
    thread.join(10)
    assert admitted == {"prepared": "prepared"}


def test_session_ids_are_sanitised(client):
    with client.websocket_connect("/ws/duplex?session_id=../../etc") as ws:
        prepare(ws)
        assert client.get("/health").json()["current_session_id"].endswith("_______etc")


def test_a_model_failure_is_reported_and_the_session_continues(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws, config={"force_listen_count": 0})
        send_chunk(ws, tone())
        reply = send_chunk(ws, silence(), sim_fault="error")
        assert reply["type"] == "error" and "simulated model failure" in reply["error"]
        assert send_chunk(ws, silence())["type"] == "result"


def test_generate_audio_false_speaks_text_only(client):
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        prepare(ws, config={"force_listen_count": 0, "generate_audio": False})
        send_chunk(ws, tone())
        reply = send_chunk(ws, silence())
    assert reply["is_listen"] is False and reply["text"] and reply["audio_data"] is None
