"""The apps registry (data.md §6): which of the four front-ends are enabled.

Unlike the original, toggles survive a restart: they are saved atomically to
`<data_dir>/gateway/apps.json`. Pages (web.py) and session routes ask `app.state.apps.enabled(id)`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from .auth import require_admin, require_api_key
from .storage import atomic_write_json, read_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class App:
    app_id: str
    name: str
    route: str


APPS = [
    App("turnbased", "Turn-based Chat", "/turnbased"),
    App("half_duplex_audio", "Half-Duplex Audio", "/half_duplex"),
    App("omni", "Omni Full-Duplex", "/omni"),
    App("audio_duplex", "Audio Full-Duplex", "/audio_duplex"),
]
BY_ID = {app.app_id: app for app in APPS}


def disabled_reason(app_id: str) -> str:
    """The original's wording of the 403 / close-1008 reason."""
    if app_id in ("omni", "audio_duplex"):
        return f"{app_id} is currently disabled"
    return f"{BY_ID[app_id].name} is currently disabled"


class AppsState:
    def __init__(self, path: Path):
        self.path = path
        self._enabled = {app.app_id: True for app in APPS}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        try:
            saved = await asyncio.to_thread(read_json, self.path, {})
        except ValueError as exc:
            log.error("%s is corrupt (%s); all apps enabled", self.path, exc)
            saved = {}
        for app_id, value in (saved or {}).items():
            if app_id in self._enabled and isinstance(value, bool):
                self._enabled[app_id] = value

    def enabled(self, app_id: str) -> bool:
        return self._enabled.get(app_id, False)

    def describe(self, app: App) -> dict:
        return {"app_id": app.app_id, "name": app.name, "route": app.route, "enabled": self._enabled[app.app_id]}

    async def set(self, app_id: str, enabled: bool) -> dict:
        async with self._lock:
            self._enabled[app_id] = enabled
            await asyncio.to_thread(atomic_write_json, self.path, dict(self._enabled))
        return self.describe(BY_ID[app_id])


class Toggle(BaseModel):
    model_config = ConfigDict(extra="ignore")
    enabled: bool


router = APIRouter()


@router.get("/api/apps", dependencies=[Depends(require_api_key)])
async def list_enabled(request: Request) -> dict:
    state: AppsState = request.app.state.apps
    return {"apps": [{"app_id": a.app_id, "name": a.name, "route": a.route} for a in APPS if state.enabled(a.app_id)]}


@router.get("/api/admin/apps", dependencies=[Depends(require_admin)])
async def list_all(request: Request) -> dict:
    state: AppsState = request.app.state.apps
    return {"apps": [state.describe(a) for a in APPS]}


@router.put("/api/admin/apps/{app_id}", dependencies=[Depends(require_admin)])
async def toggle(app_id: str, body: Toggle, request: Request) -> dict:
    if app_id not in BY_ID:
        raise HTTPException(404, f"Unknown app: {app_id}")
    return {"success": True, "app": await request.app.state.apps.set(app_id, body.enabled)}
