"""Fault injection for the simulated backend: crash, hang, fail or slow down on demand.

A plan comes from `--sim-fault` / `OMNIKUBE_SIM_FAULT`, comma-separated:
  crash_after_chunks:N   the process exits (code 75) when producing output chunk N+1
  hang_after_chunks:N    output chunk N+1 never comes (the process stays alive, the session stuck)
  error_after_chunks:N   output chunk N+1 fails with a model error (the session reports `error`)
  slow:F                 every simulated delay is F times longer
  load_error             model loading fails (the process exits non-zero)
A request may also carry `"sim_fault": "crash" | "hang" | "error"` (any chat request or duplex /
half-duplex message) to fail at its next output chunk. Chunks are counted per process: duplex
results, streamed chunks and chat replies each count one.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Callable

CRASH_EXIT_CODE = 75
_COUNTED = ("crash_after_chunks", "hang_after_chunks", "error_after_chunks")


class SimulatedFault(RuntimeError):
    """The injected model failure."""


def _crash() -> None:
    print("omnikube-worker: simulated crash (fault injection)", file=sys.stderr, flush=True)
    os._exit(CRASH_EXIT_CODE)


@dataclass
class FaultPlan:
    crash_after_chunks: int | None = None
    hang_after_chunks: int | None = None
    error_after_chunks: int | None = None
    slowdown: float = 1.0
    load_error: bool = False

    @classmethod
    def parse(cls, spec: str) -> "FaultPlan":
        plan = cls()
        for entry in filter(None, (e.strip() for e in (spec or "").split(","))):
            name, _, value = entry.partition(":")
            try:
                if name in _COUNTED:
                    setattr(plan, name, int(value))
                elif name == "slow":
                    plan.slowdown = float(value)
                    if plan.slowdown <= 0:
                        raise ValueError("must be > 0")
                elif name == "load_error" and not value:
                    plan.load_error = True
                else:
                    raise ValueError("unknown fault")
            except ValueError as exc:
                raise ValueError(f"fault {entry!r}: {exc}; known: {', '.join(_COUNTED)}:N, slow:F, load_error") from exc
        return plan


class Faults:
    """Counts output chunks and fires the planned (or requested) fault at the right one."""

    def __init__(self, plan: FaultPlan, crash: Callable[[], None] = _crash) -> None:
        self.plan = plan
        self.chunks = 0
        self._crash = crash

    async def before_chunk(self, requested: str | None = None) -> None:
        produced, self.chunks = self.chunks, self.chunks + 1
        if requested == "crash" or _due(self.plan.crash_after_chunks, produced):
            self._crash()
        if requested == "hang" or _due(self.plan.hang_after_chunks, produced):
            await asyncio.Event().wait()  # never set: the model call never returns
        if requested == "error" or _due(self.plan.error_after_chunks, produced):
            raise SimulatedFault(f"simulated model failure after {produced} chunk(s) (fault injection)")


def _due(after: int | None, produced: int) -> bool:
    return after is not None and produced >= after
