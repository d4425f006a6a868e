"""What every route handler needs: settings, backend, state, and the open sessions' stop flags."""

from __future__ import annotations

import threading
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from omnikube.protocol import CLOSE_TRY_AGAIN_LATER, WorkerStatus

from . import metrics

from .backend import Backend
from .recording import Recorder, maybe_start
from .settings import WorkerSettings
from .state import Busy, Lease, NotReady, WorkerState


@dataclass
class WorkerContext:
    settings: WorkerSettings
    backend: Backend
    state: WorkerState
    # Stop flags of open half-duplex / legacy streaming sessions, for POST /half_duplex/stop etc.
    half_duplex_stops: set[threading.Event] = field(default_factory=set)
    streaming_stops: set[threading.Event] = field(default_factory=set)

    async def recorder(self, session_id: str, app_type: str, config: dict[str, Any]) -> Recorder | None:
        """A recorder for this session when recording is on (spec data.md §1), else None."""
        return await maybe_start(self.settings.recording, Path(self.settings.data_dir), session_id, app_type,
                                 self.settings.gpu_id, config)

    def info(self) -> dict[str, Any]:
        """Fields added to session-level answers so nobody mistakes a simulation for the model."""
        return {"backend": self.backend.name, "simulated": self.backend.simulated}


def get_context(conn: HTTPConnection) -> WorkerContext:
    return conn.app.state.worker


async def admit_websocket(ws: WebSocket, ctx: WorkerContext, status: WorkerStatus, session_id: str,
                          session_type: str) -> Lease | None:
    """Admit an exclusive WebSocket session, or refuse it before accept with close 1013."""
    try:
        return await ctx.state.acquire(status, session_id)
    except NotReady:
        metrics.SESSIONS.labels(session_type, "rejected_not_ready").inc()
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason="Worker not ready")
    except Busy as busy:
        metrics.SESSIONS.labels(session_type, "rejected_busy").inc()
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason=f"Worker busy: {busy.status.value}")
    return None


def signal_stop(flags: set[threading.Event]) -> int:
    """Set every open session's stop flag; returns how many there were."""
    for flag in flags:
        flag.set()
    return len(flags)
