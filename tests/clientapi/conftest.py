"""Fixtures of the client-API tests: simulated workers behind a real gateway process, and inputs.

The clients under test are the real, unmodified `openbmb-realtime` and `openai` packages; nothing
here patches them. Audio is raw float32 16 kHz mono PCM, as both protocols carry it.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Awaitable, Callable

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.processes import wait_until, worker_behind_gateway

SAMPLE_RATE = 16_000
API_KEY = "sk-omnikube-test"
MAX_QUEUE = 2
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def speech(seconds: float = 1.0) -> bytes:
    """A loud vowel-like tone: the simulated model hears it as the user speaking."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype("<f4").tobytes()


def silence(seconds: float = 1.0) -> bytes:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype="<f4").tobytes()


def image_bytes(width: int, height: int, kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buffer, kind)
    return buffer.getvalue()


async def eventually(check: Callable[[], Awaitable[bool] | bool], deadline_s: float = 10.0, what: str = "condition") -> None:
    """Poll `check` (sync or async) until true; fail with `what` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up after {deadline_s:g} s waiting for {what}")


async def queue_length(gateway) -> int:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{gateway.url}/api/queue", headers=AUTH, timeout=5)
        return response.json()["queue_length"]


@pytest.fixture(scope="package")
def _shared_stack(tmp_path_factory):
    """Process start-up dominates these tests, so the client-API tests share one worker and one gateway.

    The gateway requires `API_KEY` and holds at most `MAX_QUEUE` waiting tickets.
    """
    log_dir = tmp_path_factory.mktemp("clientapi")
    keys = log_dir / "api-keys.txt"
    keys.write_text(f"{API_KEY}\n")
    with worker_behind_gateway(log_dir, ["--api-keys-file", str(keys), "--max-queue-size", str(MAX_QUEUE)]) as (worker, gateway):
        yield gateway, worker


@pytest.fixture
def one_worker_gateway(_shared_stack):
    """One zero-delay simulated worker behind a gateway, (gateway, worker), idle with an empty queue."""
    gateway, worker = _shared_stack
    assert gateway.alive() and worker.alive(), "an earlier test broke the shared stack"
    wait_until(lambda: _idle(gateway), 10.0, "the shared worker to be free")
    return gateway, worker


def _idle(gateway) -> bool:
    status = gateway.get("/status", headers=AUTH).json()
    return status["idle_workers"] == status["total_workers"] and status["queue_length"] == 0
