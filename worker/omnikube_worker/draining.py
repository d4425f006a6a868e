"""The worker's server: uvicorn with one drain deadline after SIGTERM.

In-flight requests get `drain_s` (uvicorn's timeout_graceful_shutdown; WebSocket sessions are
closed at once with 1012, which the gateway turns into `worker_lost`), and the replay videos still
being made get what is left of it (the lifespan reads `app.state.drain_deadline`). The operator
sets `drain_s` from the pod's termination grace period, so the worker exits by itself inside it
instead of being killed in the middle of a write.
"""

from __future__ import annotations

import time

import uvicorn


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_s: float | None) -> None:
        super().__init__(config)
        self.drain_s = drain_s

    async def shutdown(self, sockets: list | None = None) -> None:
        if self.drain_s is not None:
            self.config.app.state.drain_deadline = time.monotonic() + self.drain_s
        await super().shutdown(sockets)
