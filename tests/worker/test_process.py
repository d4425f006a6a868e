"""The real `omnikube-worker` process: what a client written from the spec sees over the network."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import websockets

from omnikube_worker.faults import CRASH_EXIT_CODE

from tests.fixtures.processes import WorkerProc, launch_worker, wait_until


@pytest.fixture(scope="module")
def shared_worker(tmp_path_factory) -> Iterator[WorkerProc]:
    """One worker for the tests that leave it idle (start-up costs seconds on a busy machine)."""
    worker = launch_worker(tmp_path_factory.mktemp("worker"), zero_delay=True)
    yield worker
    worker.kill()


def b64(samples: np.ndarray) -> str:
    return base64.b64encode(samples.astype("<f4").tobytes()).decode()


TONE = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
SILENCE = np.zeros(16000, dtype=np.float32)


def test_the_console_script_is_installed_and_documents_the_seed_flags():
    script = Path(sys.executable).with_name("omnikube-worker")  # the entry point pip installed
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--model-path", "--pt-path", "--ref-audio-path", "--worker-index", "--gpu-id", "--compile",
                 "--port", "--host", "--duplex-pause-timeout", "--backend", "--config", "--sim-fault"):
        assert flag in out


def test_a_spec_client_holds_a_duplex_session_over_the_network(shared_worker):
    async def session() -> list[dict]:
        async with websockets.connect(f"{shared_worker.ws_url}/ws/duplex?session_id=adx_net", max_size=2**27) as ws:
            await ws.send(json.dumps({"type": "prepare", "config": {"force_listen_count": 0}}))
            frames = [json.loads(await ws.recv())]
            for chunk in [TONE, SILENCE, SILENCE]:
                await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": b64(chunk)}))
                frames.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "stop"}))
            frames.append(json.loads(await ws.recv()))
            return frames

    frames = asyncio.run(session())
    assert [f["type"] for f in frames] == ["prepared", "result", "result", "result", "stopped"]
    assert frames[1]["is_listen"] is True and frames[2]["is_listen"] is False
    assert len(base64.b64decode(frames[2]["audio_data"])) == 24000 * 4
    shared_worker.wait_status("idle")


def test_a_busy_worker_refuses_the_duplex_handshake(shared_worker):
    async def two_sessions() -> Exception:
        async with websockets.connect(f"{shared_worker.ws_url}/ws/duplex?session_id=adx_1") as first:
            await first.send(json.dumps({"type": "prepare"}))
            await first.recv()
            try:
                async with websockets.connect(f"{shared_worker.ws_url}/ws/duplex?session_id=adx_2"):
                    pass
            except Exception as exc:  # the handshake is refused: the worker closed before accept
                return exc
            raise AssertionError("second session was admitted")

    refused = asyncio.run(two_sessions())
    assert "403" in str(refused) or "1013" in str(refused)
    shared_worker.wait_status("idle")


def test_post_chat_over_http(shared_worker):
    body = httpx.post(f"{shared_worker.url}/chat", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert body["success"] is True and body["simulated"] is True


def test_crash_fault_kills_the_process_mid_session(start_worker):
    worker = start_worker(zero_delay=True, fault="crash_after_chunks:2")

    async def session() -> None:
        async with websockets.connect(f"{worker.ws_url}/ws/chat") as ws:
            await ws.send(json.dumps({"messages": [{"role": "user", "content": "a long answer please"}]}))
            while True:
                await ws.recv()

    with pytest.raises(websockets.ConnectionClosed):
        asyncio.run(session())
    wait_until(lambda: not worker.alive(), 10, "the worker to exit")
    assert worker.process.returncode == CRASH_EXIT_CODE


def test_hang_fault_leaves_the_worker_alive_but_stuck_busy(start_worker):
    worker = start_worker(zero_delay=True, fault="hang_after_chunks:0")

    async def session() -> None:
        async with websockets.connect(f"{worker.ws_url}/ws/chat") as ws:
            await ws.send(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
            assert json.loads(await ws.recv())["type"] == "prefill_done"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)

    asyncio.run(session())
    assert worker.alive() and worker.health()["worker_status"] == "busy_half_duplex"


def test_a_load_failure_exits_non_zero_and_writes_its_reason_for_the_kubelet(start_worker, tmp_path):
    termination_log = tmp_path / "termination-log"
    worker = start_worker(zero_delay=True, fault="load_error", wait=False, args=["--termination-log", str(termination_log)])
    wait_until(lambda: not worker.alive(), 20, "the worker to exit")
    assert worker.process.returncode == 3 and "load failed" in worker.log()
    assert termination_log.read_text() == ("model load failed: RuntimeError: simulated model load failure "
                                           "(fault injection)")


def test_a_200000_deep_nested_frame_gets_an_error_frame_and_the_session_goes_on(shared_worker):
    async def session() -> tuple[dict, dict]:
        async with websockets.connect(f"{shared_worker.ws_url}/ws/duplex?session_id=adx_deep", max_size=2**27) as ws:
            await ws.send("[" * 200_000 + "]" * 200_000)
            error = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "prepare"}))
            return error, json.loads(await ws.recv())

    error, prepared = asyncio.run(session())
    assert error == {"type": "error", "error": "JSON nested too deeply"}
    assert prepared["type"] == "prepared"
    shared_worker.wait_status("idle")


def test_sixteen_concurrent_chats_straight_to_one_worker_wait_their_turn_and_all_succeed(start_worker):
    worker = start_worker(zero_delay=True, prefill_ms=40)  # 16 x 40 ms fits well inside the 5 s grace

    async def chats() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"messages": [{"role": "user", "content": "hi"}]}
            answers = await asyncio.gather(*(client.post(f"{worker.url}/chat", json=body) for _ in range(16)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(chats()) == [200] * 16


def test_the_worker_does_not_negotiate_per_message_compression(shared_worker):
    async def extensions() -> list:
        # The websockets client offers permessage-deflate by default, as a browser does.
        async with websockets.connect(f"{shared_worker.ws_url}/ws/duplex?session_id=adx_z") as ws:
            return [ws.response.headers.get("Sec-WebSocket-Extensions"), ws.protocol.extensions]

    assert asyncio.run(extensions()) == [None, []]
    shared_worker.wait_status("idle")


def test_sigterm_ends_an_in_flight_chat_within_the_drain_and_exits_zero(start_worker):
    worker = start_worker(tokens_per_s=1, args=["--drain-seconds", "1"])  # a reply of ~15 words takes ~15 s
    reply: list[object] = []

    def chat() -> None:
        try:
            reply.append(httpx.post(f"{worker.url}/chat", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=60))
        except httpx.HTTPError as exc:
            reply.append(exc)

    thread = threading.Thread(target=chat, daemon=True)
    thread.start()
    wait_until(lambda: (worker.health() or {}).get("worker_status", "").startswith("busy"), 10, "the chat to start")
    signalled = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(8)  # within its drain, not after the reply
    # The request had its drain second first: a worker that died on the signal would exit at once.
    assert time.monotonic() - signalled >= 0.9
    # uvicorn re-raises the signal after a clean shutdown; as PID 1 of a container that exit is 0.
    assert worker.process.returncode in (0, -signal.SIGTERM)
    thread.join(10)
    assert reply and isinstance(reply[0], httpx.HTTPError), reply  # cut at the drain, not answered
