"""The web UI: HTML pages at the seed's routes and the static files they load.

Duties:
- serve the pages (`/`, `/turnbased`, `/audio_duplex`, `/omni`, `/half_duplex`, `/admin`,
  `/s/{session_id}`);
  a user page whose app is disabled in the gateway's apps registry redirects to `/` (302);
- serve `/static/{path}` from `web/static/` and nothing outside it.

No build step: the pages are plain HTML + ES modules under `web/`. Every URL inside them is
relative, so the UI works at any path prefix (Ingress) and over HTTPS; the page picks ws:// or
wss:// from its own location. All the logic lives in the browser; this module only hands out files.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from .recordings import session_dir

WEB_DIR = Path(__file__).with_name("web")
STATIC_DIR = WEB_DIR / "static"

# Pages are small and change with every deploy; revalidate instead of serving stale code.
_NO_CACHE = {"Cache-Control": "no-cache"}

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
}

router = APIRouter(include_in_schema=False)


def _app_enabled(request: Request, app_id: str) -> bool:
    """Ask the gateway's apps registry (`app.state.apps`, apps.py); no registry = enabled."""
    registry = getattr(request.app.state, "apps", None)
    return True if registry is None else registry.enabled(app_id)


def _page(name: str) -> FileResponse:
    return FileResponse(WEB_DIR / name, media_type=_MEDIA_TYPES[".html"], headers=_NO_CACHE)


@router.get("/")
async def home() -> Response:
    return _page("index.html")


# Page route -> (app id in the apps registry, file). Audio and omni share one page.
GATED_PAGES = {
    "/turnbased": ("turnbased", "turnbased.html"),
    "/audio_duplex": ("audio_duplex", "duplex.html"),
    "/omni": ("omni", "duplex.html"),
    "/half_duplex": ("half_duplex_audio", "half_duplex.html"),
}


def _gated_page(app_id: str, name: str) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        if not _app_enabled(request, app_id):
            return RedirectResponse("./", status_code=302)
        return _page(name)

    page.__name__ = f"page_{app_id}"
    return page


for _path, (_app_id, _name) in GATED_PAGES.items():
    router.add_api_route(_path, _gated_page(_app_id, _name), methods=["GET"])


@router.get("/admin")
async def admin() -> Response:
    return _page("admin.html")


@router.get("/s/{session_id}")
async def session_viewer(session_id: str, request: Request) -> Response:
    # A link to a session that was never recorded (or has been cleaned up) is an error, as in the
    # original; an invalid id is a 400 from check_id. The page itself fetches the rest.
    if not await asyncio.to_thread((session_dir(request, session_id) / "meta.json").is_file):
        raise HTTPException(404, f"Session not found: {session_id}")
    return _page("session.html")


def _resolve_static(path: str) -> Path | None:
    """The file under STATIC_DIR that `path` names, or None (missing, a directory, or outside)."""
    root = STATIC_DIR.resolve()
    candidate = (root / path).resolve()
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


@router.get("/static/{path:path}")
async def static_file(path: str) -> Response:
    file = await asyncio.to_thread(_resolve_static, path)
    if file is None:
        raise HTTPException(status_code=404, detail=f"Static file not found: {path}")
    media_type = _MEDIA_TYPES.get(file.suffix)
    return FileResponse(file, media_type=media_type, headers=_NO_CACHE)
