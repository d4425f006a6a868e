"""Status, queue and admin API, apps gating and probes, on an in-process gateway with no workers."""

from __future__ import annotations

import json

import pytest
from starlette.websockets import WebSocketDisconnect

from omnikube_gateway.app import create_app
from omnikube_gateway.settings import GatewaySettings
from fastapi.testclient import TestClient


def test_health_is_always_healthy_and_names_a_timestamp(gateway_app):
    body = gateway_app.get("/health").json()
    assert body["status"] == "healthy" and "T" in body["timestamp"]
    assert gateway_app.get("/healthz").status_code == 200
    assert gateway_app.get("/readyz").json()["status"] == "ready"


def test_status_lists_every_field_of_the_original(gateway_app):
    body = gateway_app.get("/status").json()
    for field in ("gateway_healthy", "total_workers", "idle_workers", "busy_workers", "duplex_workers", "loading_workers",
                  "error_workers", "offline_workers", "queue_length", "max_queue_size", "running_tasks"):
        assert field in body, field
    assert body["total_workers"] == 0 and body["max_queue_size"] == 1000
    assert gateway_app.get("/workers").json() == {"total": 0, "workers": []}
    assert gateway_app.get("/cache").json() == {"workers": []}


def test_an_unknown_ticket_is_reported_not_found(gateway_app):
    body = gateway_app.get("/api/queue/q_000000000000").json()
    assert body == {"found": False, "message": "Ticket not in queue (may have been assigned or cancelled)"}
    assert gateway_app.delete("/api/queue/q_000000000000").json() == {"success": False}


def test_eta_settings_are_range_checked(gateway_app):
    assert gateway_app.put("/api/config/eta", json={"eta_chat_s": -1}).status_code == 422
    assert gateway_app.put("/api/config/eta", json={"ema_alpha": 1.5}).status_code == 422
    assert gateway_app.put("/api/config/eta", json={"eta_chat_s": "fast"}).status_code == 422


def test_eta_settings_replace_the_baselines_and_survive_a_restart(gateway_app, tmp_path):
    body = gateway_app.put("/api/config/eta", json={"eta_chat_s": 7.5, "ema_alpha": 0.5}).json()
    assert body["config"]["eta_chat_s"] == 7.5 and body["config"]["eta_omni_duplex_s"] == 90.0
    assert body["ema_alpha"] == 0.5 and body["ema_chat_s"] is None and body["ema_chat_samples"] == 0
    with TestClient(create_app(GatewaySettings(data_dir=tmp_path / "data"))) as again:
        reloaded = again.get("/api/config/eta").json()
    assert reloaded["config"]["eta_chat_s"] == 7.5 and reloaded["ema_alpha"] == 0.5


@pytest.mark.gateway_settings(lang="en")
def test_frontend_defaults_carry_playback_delay_and_the_language(gateway_app):
    assert gateway_app.get("/api/frontend_defaults").json() == {"playback_delay_ms": 200, "default_lang": "en"}


def test_a_disabled_app_refuses_its_routes_and_stays_disabled_after_a_restart(gateway_app, tmp_path):
    body = gateway_app.put("/api/admin/apps/turnbased", json={"enabled": False}).json()
    assert body == {"success": True, "app": {"app_id": "turnbased", "name": "Turn-based Chat", "route": "/turnbased", "enabled": False}}
    response = gateway_app.post("/api/chat", json={"messages": []})
    assert response.status_code == 403 and response.json() == {"detail": "Turn-based Chat is currently disabled"}
    with pytest.raises(WebSocketDisconnect) as closed:
        with gateway_app.websocket_connect("/ws/chat") as ws:
            ws.receive_text()
    assert closed.value.code == 1008
    assert [a["app_id"] for a in gateway_app.get("/api/apps").json()["apps"]] == ["half_duplex_audio", "omni", "audio_duplex"]
    with TestClient(create_app(GatewaySettings(data_dir=tmp_path / "data"))) as again:
        assert again.post("/api/chat", json={}).status_code == 403


def test_duplex_gating_follows_the_session_id_prefix(gateway_app):
    gateway_app.put("/api/admin/apps/audio_duplex", json={"enabled": False})
    with pytest.raises(WebSocketDisconnect) as closed:
        with gateway_app.websocket_connect("/ws/duplex/adx_1") as ws:
            ws.receive_text()
    assert closed.value.code == 1008 and closed.value.reason == "audio_duplex is currently disabled"


def test_an_unknown_app_is_a_404_and_a_bad_toggle_a_422(gateway_app):
    assert gateway_app.put("/api/admin/apps/nope", json={"enabled": True}).status_code == 404
    assert gateway_app.put("/api/admin/apps/omni", json={"enabled": "maybe"}).status_code == 422


def test_record_trace_appends_one_line_per_call_and_refuses_non_objects(gateway_app, tmp_path):
    assert gateway_app.post("/api/_debug/record_trace", json={"step": 1}).json() == {"ok": True}
    assert gateway_app.post("/api/_debug/record_trace", json=[1]).status_code == 422
    lines = (tmp_path / "data" / "diag" / "mobile-record-trace.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["step"] == 1


def test_a_chat_with_no_worker_waits_in_the_queue_until_the_timeout(tmp_path):
    with TestClient(create_app(GatewaySettings(data_dir=tmp_path / "data", request_timeout=0.3))) as client:
        response = client.post("/api/chat", json={"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 503 and "within 0.3 s" in response.json()["detail"]
