"""`POST /api/chat` through the ASGI app (the route, as in-process clients reach it): statuses and JSON reasons.

In process (Starlette's TestClient), with API keys configured and no worker.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from omnikube_gateway import proxy_http
from omnikube_gateway.app import create_app
from omnikube_gateway.settings import GatewaySettings

CHAT = {"messages": [{"role": "user", "content": "x"}]}


@pytest.fixture
def keyed(tmp_path):
    (tmp_path / "keys").write_text("public-key-1\n")
    settings = GatewaySettings(data_dir=tmp_path / "data", api_keys_file=str(tmp_path / "keys"), request_timeout=0.2)
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_chat_without_a_valid_key_is_a_401_with_a_json_reason(keyed):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = keyed.post("/api/chat", json=CHAT, headers=headers)
        assert response.status_code == 401 and response.json() == {"detail": "Missing or invalid API key"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_chat_with_a_valid_key_gets_past_auth_to_the_queue(keyed):
    response = keyed.post("/api/chat", json=CHAT, headers={"X-API-Key": "public-key-1"})
    assert response.status_code == 503 and "within 0.2 s" in response.json()["detail"]


def test_an_oversized_chat_body_is_a_413_with_a_json_reason(keyed, monkeypatch):
    monkeypatch.setattr(proxy_http, "CHAT_BODY_LIMIT", 100)
    response = keyed.post("/api/chat", content=b"{" + b" " * 200 + b"}", headers={"X-API-Key": "public-key-1"})
    assert response.status_code == 413 and response.json() == {"detail": "Chat request too large (max 100 bytes)"}


def test_other_methods_still_reach_fastapi_and_the_route_stays_in_the_schema(keyed):
    assert keyed.get("/api/chat", headers={"X-API-Key": "public-key-1"}).status_code == 405
    assert "post" in keyed.get("/openapi.json", headers={"X-API-Key": "public-key-1"}).json()["paths"]["/api/chat"]
