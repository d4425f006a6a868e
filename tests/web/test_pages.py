"""web.py: which page each route serves, app gating, the static-file boundary, relative URLs only."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from omnikube_gateway import web

PAGES = {
    "/": "Choose Mode",
    "/turnbased": "Turn-based Chat",
    "/audio_duplex": "duplex.js",
    "/omni": "duplex.js",
    "/half_duplex": "Half-Duplex Audio",
    "/admin": "Admin",
    "/s/chat_abc123": "Session Viewer",
}


class Apps:
    def __init__(self, disabled: set[str] = frozenset()):
        self.disabled = set(disabled)

    def enabled(self, app_id: str) -> bool:
        return app_id not in self.disabled


@pytest.fixture
def client(tmp_path):
    """`client(apps)`: the web router alone, over a data dir where `chat_abc123` was recorded."""
    (tmp_path / "sessions" / "chat_abc123").mkdir(parents=True)
    (tmp_path / "sessions" / "chat_abc123" / "meta.json").write_text('{"session_id": "chat_abc123"}')

    def make(apps: Apps | None = None) -> TestClient:
        app = FastAPI()
        app.include_router(web.router)
        app.state.settings = SimpleNamespace(data_dir=tmp_path)
        if apps is not None:
            app.state.apps = apps
        return TestClient(app)

    return make


@pytest.mark.parametrize("path,marker", PAGES.items())
def test_every_page_is_served_as_html_that_revalidates(path, marker, client):
    response = client(Apps()).get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert marker in response.text


def test_the_viewer_of_a_session_never_recorded_is_a_404_with_the_reason(client):
    response = client(Apps()).get("/s/chat_never")
    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found: chat_never"}


def test_the_viewer_of_an_invalid_session_id_is_a_400(client):
    assert client(Apps()).get("/s/bad id!").status_code == 400


@pytest.mark.parametrize("path,app_id", [("/turnbased", "turnbased"), ("/omni", "omni"),
                                         ("/audio_duplex", "audio_duplex"), ("/half_duplex", "half_duplex_audio")])
def test_a_page_whose_app_is_disabled_redirects_home(path, app_id, client):
    response = client(Apps({app_id})).get(path, follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "./"  # relative: right behind any path prefix


def test_scripts_are_served_as_javascript_modules(client):
    response = client().get("/static/js/queue.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "export class QueueCountdown" in response.text


@pytest.mark.parametrize("path", ["/static/../web.py", "/static/%2e%2e/%2e%2e/web.py", "/static/js", "/static/nope.js"])
def test_nothing_outside_the_static_folder_or_missing_is_served(path, client):
    response = client().get(path)
    assert response.status_code == 404
    assert "detail" in response.json()


def _web_files():
    return [p for p in web.WEB_DIR.rglob("*") if p.suffix in (".html", ".js", ".css")]


@pytest.mark.parametrize("file", _web_files(), ids=lambda p: str(p.relative_to(web.WEB_DIR)))
def test_the_ui_uses_relative_urls_only_so_it_works_behind_an_ingress_prefix(file):
    text = file.read_text(encoding="utf-8")
    absolute = re.findall(r"""(?:href|src)=["']/[^/]|(?:api|fetch|wsUrl|httpUrl)\(\s*[`"']/""", text)
    remote = re.findall(r"""(?:href|src)=["']https?://|import[^;]+from\s+["']https?://""", text)
    assert absolute == [], f"{file.name}: absolute URLs break behind a path prefix: {absolute}"
    assert remote == [], f"{file.name}: assets must not come from the internet: {remote}"
    hard_coded_ws = re.findall(r"""["'`]wss?://""", text)
    assert hard_coded_ws == [], f"{file.name}: ws/wss must follow the page's own protocol"
