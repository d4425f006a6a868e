"""/health, /cache_info, /clear_cache and /metrics of a simulated worker."""

from __future__ import annotations

import threading

from omnikube_worker.simulated import SimulatedBackend
from omnikube_worker.settings import SimOptions

from tests.fixtures.worker_app import GatedBackend, status_of, wait_for


class SlowLoad(SimulatedBackend):
    def __init__(self) -> None:
        super().__init__(SimOptions.zero_delay())
        self.release = threading.Event()

    def load(self) -> None:
        self.release.wait(10)


def test_idle_health_has_every_field_of_the_original_with_its_type(client):
    body = client.get("/health").json()
    assert body["status"] == "healthy" and body["worker_status"] == "idle"
    assert isinstance(body["gpu_id"], int) and body["model_loaded"] is True
    assert body["current_session_id"] is None
    assert isinstance(body["total_requests"], int) and isinstance(body["avg_inference_time_ms"], float)
    assert isinstance(body["kv_cache_length"], int)


def test_health_says_the_backend_is_simulated(client):
    body = client.get("/health").json()
    assert body["backend"] == "simulated" and body["simulated"] is True


def test_health_reports_loading_until_the_model_is_loaded_and_refuses_work_meanwhile(worker_client):
    backend = SlowLoad()
    client = worker_client(backend=backend, wait_idle=False)
    body = client.get("/health").json()
    assert (body["status"], body["worker_status"], body["model_loaded"]) == ("initializing", "loading", False)
    assert client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 503
    assert client.get("/cache_info").json() == {"detail": "Worker not ready"}
    assert client.get("/readyz").status_code == 503
    backend.release.set()
    wait_for(lambda: status_of(client) == "idle", "the load to finish")
    assert client.get("/readyz").json() == {"ready": True, "worker_status": "idle"}


def test_a_failed_load_reports_error_and_calls_the_failure_hook(worker_client):
    from fastapi.testclient import TestClient

    from omnikube_worker.app import create_app
    from omnikube_worker.settings import WorkerSettings

    failures = []
    app = create_app(WorkerSettings(sim=SimOptions.zero_delay(fault="load_error")), on_load_failure=failures.append)
    with TestClient(app) as client:
        wait_for(lambda: failures, "the failure hook")
        body = client.get("/health").json()
    assert (body["status"], body["worker_status"], body["model_loaded"]) == ("error", "error", False)
    assert "fault injection" in str(failures[0])


def test_gpu_id_and_worker_index_come_from_settings(worker_client):
    body = worker_client(gpu_id=3, worker_index=2).get("/health").json()
    assert body["gpu_id"] == 3 and body["worker_index"] == 2


def test_cache_info_reports_the_worker_status_and_the_original_note(client):
    body = client.get("/cache_info").json()
    assert body["status"] == "idle"
    assert body["note"] == "KV cache state is now tracked by Gateway (cached_hash on WorkerConnection)"


def test_clear_cache_empties_the_streaming_kv_cache(client):
    with client.websocket_connect("/ws/streaming") as ws:
        ws.send_json({"type": "prefill", "messages": [{"role": "user", "content": "remember this"}]})
        assert ws.receive_json()["input_tokens"] > 0
        ws.send_json({"type": "generate", "generate_audio": False})
        while ws.receive_json()["type"] != "done":
            pass
        ws.send_json({"type": "close"})
    assert client.get("/health").json()["kv_cache_length"] > 0
    assert client.post("/clear_cache").json() == {"success": True, "message": "Cache cleared"}
    assert client.get("/health").json()["kv_cache_length"] == 0


def test_clear_cache_during_a_session_is_refused_instead_of_corrupting_it(worker_client):
    backend = GatedBackend(gated=("duplex_step",))
    client = worker_client(backend=backend)
    with client.websocket_connect("/ws/duplex?session_id=adx_a") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        response = client.post("/clear_cache")
        assert response.status_code == 409 and response.json()["success"] is False
        ws.send_json({"type": "stop"})
        assert ws.receive_json() == {"type": "stopped"}


def test_metrics_expose_state_sessions_latency_tokens_audio_and_load_time(client):
    client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}], "tts": {"enabled": True}})
    text = client.get("/metrics").text
    assert 'omnikube_worker_state{state="idle"} 1.0' in text
    assert 'omnikube_worker_sessions_total{outcome="completed",task_type="chat"}' in text
    for name in ("omnikube_worker_time_to_first_token_seconds_bucket", "omnikube_worker_time_to_first_audio_seconds_bucket",
                 "omnikube_worker_generated_tokens_total", "omnikube_worker_generated_audio_seconds_total",
                 "omnikube_worker_model_load_seconds", 'omnikube_worker_info{backend="simulated"'):
        assert name in text


def test_completed_chat_counts_in_the_sessions_metric(client):
    def completed() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith('omnikube_worker_sessions_total{outcome="completed",task_type="chat"}'):
                return float(line.split()[-1])
        raise AssertionError("series missing")

    before = completed()
    client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}]})
    assert completed() == before + 1


def test_the_simulated_backend_has_no_default_voice_and_says_so(client):
    response = client.get("/default_ref_audio")
    assert response.status_code == 404
    assert response.json() == {"detail": "The simulated backend has no default voice"}
