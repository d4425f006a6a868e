"""What every route handler needs: settings, backend, state, and the open sessions' stop flags."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from .backend import Backend
from .settings import WorkerSettings
from .state import WorkerState


@dataclass
class WorkerContext:
    settings: WorkerSettings
    backend: Backend
    state: WorkerState
    # Stop flags of open half-duplex / legacy streaming sessions, for POST /half_duplex/stop etc.
    half_duplex_stops: set[threading.Event] = field(default_factory=set)
    streaming_stops: set[threading.Event] = field(default_factory=set)

    def info(self) -> dict[str, Any]:
        """Fields added to session-level answers so nobody mistakes a simulation for the model."""
        return {"backend": self.backend.name, "simulated": self.backend.simulated}


def get_context(conn: HTTPConnection) -> WorkerContext:
    return conn.app.state.worker
