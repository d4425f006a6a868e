"""POST /chat: the turn-based JSON answer, its state transitions and every bad input."""

from __future__ import annotations

import base64
import io
import threading
import wave

import pytest

from omnikube_worker import chat as chat_module

from tests.fixtures.worker_app import GatedBackend, pcm_b64, png_b64, silence, status_of, tone

HELLO = {"messages": [{"role": "user", "content": "1+1=? Answer with a digit."}], "generation": {"max_new_tokens": 10}}


def test_chat_answers_with_the_original_response_fields(client):
    body = client.post("/chat", json=HELLO).json()
    assert body["success"] is True and body["error"] is None
    assert isinstance(body["text"], str) and body["text"].startswith("[simulated]")
    assert body["audio_data"] is None and body["audio_path"] is None and body["audio_sample_rate"] == 24000
    assert isinstance(body["tokens_generated"], int) and 0 < body["tokens_generated"] <= 10
    assert isinstance(body["duration_ms"], float)
    stats = body["token_stats"]
    assert stats["cached_tokens"] == 0 and stats["total_tokens"] == stats["input_tokens"] + stats["generated_tokens"]
    assert body["backend"] == "simulated" and body["simulated"] is True


def test_chat_with_tts_returns_a_24khz_16bit_mono_wav_file(client):
    body = client.post("/chat", json={**HELLO, "tts": {"enabled": True}}).json()
    with wave.open(io.BytesIO(base64.b64decode(body["audio_data"]))) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (24000, 2, 1)
        assert wav.getnframes() > 2400


def test_the_same_request_gets_the_same_text(client):
    assert client.post("/chat", json=HELLO).json()["text"] == client.post("/chat", json=HELLO).json()["text"]


def test_chat_counts_requests_and_mean_inference_time(client):
    client.post("/chat", json=HELLO)
    client.post("/chat", json=HELLO)
    health = client.get("/health").json()
    assert health["total_requests"] == 2 and health["avg_inference_time_ms"] > 0


def test_worker_is_busy_chat_during_a_chat_and_idle_after(worker_client):
    backend = GatedBackend(gated=("chat",))
    client = worker_client(backend=backend)
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=client.post("/chat", json=HELLO)))
    thread.start()
    assert backend.entered.wait(5)
    health = client.get("/health").json()
    assert health["worker_status"] == "busy_chat" and health["current_session_id"] is None
    backend.gate.set()
    thread.join(5)
    assert result["r"].status_code == 200 and status_of(client) == "idle"


@pytest.mark.timeout(20)
def test_a_second_chat_gets_429_when_the_first_outlasts_the_busy_grace(worker_client):
    backend = GatedBackend(gated=("chat",))
    client = worker_client(backend=backend, busy_grace_s=0.2)
    thread = threading.Thread(target=lambda: client.post("/chat", json=HELLO))
    thread.start()
    assert backend.entered.wait(5)
    response = client.post("/chat", json=HELLO)
    backend.gate.set()
    thread.join(5)
    assert response.status_code == 429
    assert response.json() == {"detail": "Worker busy, status: busy_chat"}


def test_images_and_audio_items_are_accepted_and_described(client):
    content = [{"type": "text", "text": "What is this?"}, {"type": "image", "data": png_b64(40, 30)},
               {"type": "audio", "data": pcm_b64(tone(1.5)), "sample_rate": 16000}]
    body = client.post("/chat", json={"messages": [{"role": "user", "content": content}]}).json()
    assert body["success"] is True
    assert "40x30" in body["text"] and "1.5 seconds of audio" in body["text"]


@pytest.mark.parametrize("bad, where", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ({"messages": [{"role": "user", "content": [{"type": "audio", "data": "AAAA", "sample_rate": 44100}]}]}, "sample_rate"),
    ({"messages": [{"role": "user", "content": [{"type": "smell", "data": "x"}]}]}, "content"),
    ({**HELLO, "generation": {"max_new_tokens": 0}}, "max_new_tokens"),
])
def test_invalid_requests_get_422_naming_the_field(client, bad, where):
    response = client.post("/chat", json=bad)
    assert response.status_code == 422
    assert where in str(response.json()["detail"])
    assert status_of(client) == "idle"


def test_malformed_json_gets_422(client):
    response = client.post("/chat", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and status_of(client) == "idle"


@pytest.mark.parametrize("item, reason", [
    ({"type": "image", "data": base64.b64encode(b"definitely not a picture").decode()}, "not a decodable image"),
    ({"type": "image", "data": "%%%not-base64%%%"}, "not valid base64"),
    ({"type": "audio", "data": base64.b64encode(b"abc").decode()}, "not a whole number of float32 samples"),
    ({"type": "audio", "data": base64.b64encode(b"\x00\x7f" * 800).decode()}, "not float PCM"),
])
def test_undecodable_media_gets_400_with_the_reason_and_the_worker_stays_usable(client, item, reason):
    response = client.post("/chat", json={"messages": [{"role": "user", "content": [item]}]})
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and reason in body["error"] and reason in body["detail"]
    assert status_of(client) == "idle"
    assert client.post("/chat", json=HELLO).json()["success"] is True


def wav_item(rate: int, seconds: float) -> dict:
    """An audio item holding a 16-bit mono WAV file instead of raw float32."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(rate)
        wav.writeframes(b"\x00\x10" * int(rate * seconds))
    return {"type": "audio", "data": base64.b64encode(buffer.getvalue()).decode()}


def test_a_wav_file_at_another_sample_rate_is_resampled_instead_of_refused(client):
    item = wav_item(44100, 0.5)
    response = client.post("/chat", json={"messages": [{"role": "user", "content": [item]}]})
    assert response.status_code == 200 and response.json()["success"] is True


def test_a_16khz_wav_file_is_converted_instead_of_refused(client):
    item = wav_item(16000, 1.0)
    body = client.post("/chat", json={"messages": [{"role": "user", "content": [item]}]}).json()
    assert body["success"] is True and "1.0 seconds of audio" in body["text"]


def test_an_oversized_body_gets_413(client, monkeypatch):
    monkeypatch.setattr(chat_module, "MAX_CHAT_BODY_BYTES", 1000)
    big = {"messages": [{"role": "user", "content": [{"type": "audio", "data": pcm_b64(silence(1))}]}]}
    response = client.post("/chat", json=big)
    assert response.status_code == 413 and "exceeds" in response.json()["detail"]


def test_a_model_failure_gets_500_with_success_false_and_the_next_chat_works(client):
    response = client.post("/chat", json={**HELLO, "sim_fault": "error"})
    assert response.status_code == 500
    assert response.json()["success"] is False and "simulated model failure" in response.json()["error"]
    assert status_of(client) == "idle"
    assert client.post("/chat", json=HELLO).status_code == 200

