"""The worker's wire protocol: states, task types and message models.

Shared by the worker (which speaks it) and the gateway (which routes and relays it). Field names and
`type` strings are the original demo service's, verbatim.
"""

from __future__ import annotations

from enum import Enum


class WorkerStatus(str, Enum):
    """`worker_status` in `/health`."""

    loading = "loading"
    idle = "idle"
    busy_chat = "busy_chat"
    busy_half_duplex = "busy_half_duplex"
    busy_streaming = "busy_streaming"  # legacy /ws/streaming
    duplex_active = "duplex_active"
    duplex_paused = "duplex_paused"
    error = "error"

    @property
    def busy(self) -> bool:
        return self not in (WorkerStatus.idle, WorkerStatus.loading, WorkerStatus.error)


class TaskType(str, Enum):
    """Kinds of work the gateway queues; each has an ETA baseline `service.eta_<value>_s`."""

    chat = "chat"
    streaming = "streaming"
    half_duplex = "half_duplex"
    audio_duplex = "audio_duplex"
    omni_duplex = "omni_duplex"


# Session ids starting with this prefix are audio duplex; every other duplex session is omni.
AUDIO_DUPLEX_PREFIX = "adx_"

INPUT_SAMPLE_RATE = 16_000   # client audio: float32 mono, base64
OUTPUT_SAMPLE_RATE = 24_000  # model audio: float32 mono, base64 (POST /chat returns 16-bit WAV)
WS_MAX_MESSAGE_BYTES = 128 * 1024 * 1024
