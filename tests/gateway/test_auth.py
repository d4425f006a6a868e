"""API keys: off by default; public and admin keys checked separately when configured."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from omnikube_gateway.app import create_app
from omnikube_gateway.settings import GatewaySettings


@pytest.fixture
def keyed(tmp_path):
    (tmp_path / "keys").write_text("# clients\npublic-key-1\n")
    (tmp_path / "admin").write_text("admin-key-1\n")
    settings = GatewaySettings(data_dir=tmp_path / "data", api_keys_file=str(tmp_path / "keys"),
                               admin_keys_file=str(tmp_path / "admin"))
    with TestClient(create_app(settings)) as client:
        yield client


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_without_key_files_everything_is_open(gateway_app):
    assert gateway_app.get("/status").status_code == 200
    assert gateway_app.put("/api/config/eta", json={}).status_code == 200


def test_the_public_api_needs_a_key_and_says_so_in_json(keyed):
    response = keyed.get("/status")
    assert response.status_code == 401 and response.json() == {"detail": "Missing or invalid API key"}
    assert response.headers["www-authenticate"] == "Bearer"
    assert keyed.get("/status", headers=bearer("wrong")).status_code == 401
    assert keyed.get("/status", headers=bearer("public-key-1")).status_code == 200
    assert keyed.get("/status", headers={"X-API-Key": "public-key-1"}).status_code == 200


def test_probes_metrics_and_front_end_defaults_stay_open(keyed):
    for path in ("/health", "/healthz", "/readyz", "/metrics", "/api/frontend_defaults"):
        assert keyed.get(path).status_code == 200, path


def test_admin_routes_need_an_admin_key(keyed):
    assert keyed.put("/api/config/eta", json={}, headers=bearer("public-key-1")).status_code == 403
    assert keyed.put("/api/config/eta", json={}).status_code == 401
    assert keyed.put("/api/config/eta", json={}, headers=bearer("admin-key-1")).status_code == 200
    assert keyed.get("/status", headers=bearer("admin-key-1")).status_code == 200  # admin keys also open the public API


def test_a_websocket_without_a_key_is_refused_and_a_browser_may_pass_it_in_the_query(keyed):
    with pytest.raises(WebSocketDisconnect) as closed:
        with keyed.websocket_connect("/ws/duplex/omni_1") as ws:
            ws.receive_text()
    assert closed.value.code == 1008
    keyed.put("/api/admin/apps/omni", json={"enabled": False}, headers=bearer("admin-key-1"))
    with pytest.raises(WebSocketDisconnect) as closed:  # got past auth: now refused as disabled
        with keyed.websocket_connect("/ws/duplex/omni_1?api_key=public-key-1") as ws:
            ws.receive_text()
    assert closed.value.reason == "omni is currently disabled"


def test_a_configured_key_file_that_is_missing_stops_the_start(tmp_path):
    settings = GatewaySettings(data_dir=tmp_path / "data", api_keys_file=str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError):
        with TestClient(create_app(settings)):
            pass
