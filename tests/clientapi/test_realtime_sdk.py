"""`/v1/realtime` held by the real `openbmb-realtime` SDK against a gateway with simulated workers."""

from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager

import pytest
import uvicorn
from openbmb_realtime import (
    AudioDelta,
    ErrorEvent,
    Interrupted,
    RealtimeClient,
    RealtimeConfig,
    RealtimeError,
    SessionClosed,
    SessionQueued,
    SessionReady,
    TextDelta,
    TurnCompleted,
    WorkerAssigned,
)
from pydantic import BaseModel

from omnikube.config import OmniConfig
from omnikube_gateway.app import create_app
from omnikube_gateway.settings import GatewaySettings, StaticWorker
from tests.fixtures.processes import free_port

from .conftest import API_KEY, eventually, image_bytes, queue_length, silence, speech

pytestmark = pytest.mark.timeout(120)  # process start-up on a loaded machine dominates
MODEL = "minicpm-o-4.5-realtime"


def client(gateway, api_key: str = API_KEY, **options) -> RealtimeClient:
    return RealtimeClient(api_key=api_key, base_url=gateway.url, **options)


async def feed(session, chunks, pause_s: float = 0.02) -> None:
    """Send 1 s chunks at a steady cadence, as a microphone would (faster than real time)."""
    for chunk in chunks:
        await session.send_audio(chunk)
        await asyncio.sleep(pause_s)


async def until(session, predicate, limit: int = 200) -> list:
    """Events of `session` up to and including the first that satisfies `predicate`."""
    seen = []
    async for event in session:
        seen.append(event)
        if predicate(event) or len(seen) >= limit:
            return seen
    return seen


def a_reply() -> list[bytes]:
    # The simulated model listens for its first three steps, then answers once the user falls silent.
    return [speech(), speech()] + [silence()] * 12


async def test_an_audio_session_answers_speech_with_audio_text_and_a_completed_turn(one_worker_gateway):
    gateway, _ = one_worker_gateway
    session = await client(gateway).audio.connect(model=MODEL, system_prompt="Be brief.")
    assert re.fullmatch(r"rt_\d{13,}", session.id)
    feeder = asyncio.create_task(feed(session, a_reply()))
    events = await until(session, lambda e: isinstance(e, TurnCompleted))
    await feeder
    assert [type(e) for e in events[:2]] == [WorkerAssigned, SessionReady]
    assert any(isinstance(e, AudioDelta) and len(e.audio) > 0 and len(e.audio) % 4 == 0 for e in events)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.startswith("[simulated] I heard you speak for 2.0 seconds")
    assert [e.end_of_turn for e in events if isinstance(e, TextDelta)][-1] is True
    await session.close()


async def test_a_video_session_sends_frames_that_the_model_sees(one_worker_gateway):
    gateway, _ = one_worker_gateway
    session = await client(gateway).video.connect(model=MODEL)
    frame = image_bytes(64, 48)

    async def feed_video():
        for chunk in a_reply():
            await session.send_audio_video(chunk, frame)
            await asyncio.sleep(0.02)

    feeder = asyncio.create_task(feed_video())
    events = await until(session, lambda e: isinstance(e, TextDelta) and e.end_of_turn)
    await feeder
    assert "I can see a 64x48 picture" in "".join(e.text for e in events if isinstance(e, TextDelta))
    await session.close()


async def test_closing_reports_user_stop_with_usage_and_frees_the_worker_at_once(one_worker_gateway):
    gateway, _ = one_worker_gateway
    first = await client(gateway).audio.connect(model=MODEL)
    feeder = asyncio.create_task(feed(first, a_reply()))
    await until(first, lambda e: isinstance(e, TurnCompleted))
    await feeder
    await first.close()
    closed = [e for e in await until(first, lambda e: isinstance(e, SessionClosed))]
    assert closed[-1] == SessionClosed("user_stop")
    usage = first.usage
    assert usage is not None and usage.completion_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.audio_output_tokens and usage.audio_output_tokens > 0

    second = await client(gateway).audio.connect(model=MODEL)
    assert not any(isinstance(e, SessionQueued) for e in await until(second, lambda e: isinstance(e, SessionReady)))
    await second.close()


async def test_sessions_queue_behind_a_busy_worker_and_positions_count_down(one_worker_gateway):
    gateway, _ = one_worker_gateway
    holder = await client(gateway).audio.connect(model=MODEL)
    second = asyncio.create_task(client(gateway).audio.connect(model=MODEL))
    await eventually(lambda: queue_length(gateway), what="the second session to queue")
    third = asyncio.create_task(client(gateway).audio.connect(model=MODEL))
    await eventually(lambda: _equals(queue_length(gateway), 2), what="the third session to queue")

    await holder.close()
    second_session = await second
    assert not third.done()
    await second_session.close()
    third_session = await third

    events = await until(third_session, lambda e: isinstance(e, SessionReady))
    queued = [e for e in events if isinstance(e, SessionQueued)]
    assert [e.position for e in queued] == [2, 1]
    assert all(e.estimated_wait_seconds is not None and e.estimated_wait_seconds > 0 for e in queued)
    assert queued[0].queue_length == 2
    assert isinstance(events[len(queued)], WorkerAssigned)
    await third_session.close()


async def _equals(value, expected) -> bool:
    return (await value) == expected


async def test_interrupt_makes_the_model_listen_on_the_next_chunk(one_worker_gateway):
    gateway, _ = one_worker_gateway
    session = await client(gateway).audio.connect(model=MODEL)
    # Steps 1-3 always listen; step 4, after 2 s of speech and a silence, starts the answer.
    await feed(session, [speech(), speech(), silence(), silence()])
    await until(session, lambda e: isinstance(e, AudioDelta))
    session.interrupt()
    await session.send_audio(silence())
    interrupted = await until(session, lambda e: isinstance(e, (Interrupted, AudioDelta)))
    assert isinstance(interrupted[-1], Interrupted)  # text of the step already answered may come first
    assert isinstance((await until(session, lambda e: isinstance(e, (TurnCompleted, AudioDelta))))[-1], TurnCompleted)
    await session.send_audio(silence())  # no interrupt: the model goes on with its answer
    assert isinstance((await until(session, lambda e: isinstance(e, (TurnCompleted, AudioDelta))))[-1], AudioDelta)
    await session.close()


async def test_a_session_that_fills_its_context_is_closed_with_context_full(one_worker_gateway):
    gateway, _ = one_worker_gateway
    session = await client(gateway).audio.connect(model=MODEL, config=RealtimeConfig(max_kv_tokens=150))
    feeder = asyncio.create_task(feed(session, [silence()] * 20))
    events = await until(session, lambda e: isinstance(e, SessionClosed))
    feeder.cancel()
    assert events[-1] == SessionClosed("context_full")
    assert session.usage is not None and session.usage.total_tokens >= 150


async def test_a_worker_killed_mid_session_ends_it_with_an_error_and_the_next_session_gets_another(start_worker, start_gateway):
    workers = [start_worker(zero_delay=True, wait=False) for _ in range(2)]
    for worker in workers:
        worker.wait_status("idle", deadline_s=30)
    gateway = start_gateway(workers)
    session = await client(gateway).audio.connect(model=MODEL)
    feeder = asyncio.create_task(feed(session, a_reply() * 3, pause_s=0.1))
    await until(session, lambda e: isinstance(e, AudioDelta))
    busy = next(w for w in workers if (w.health() or {}).get("worker_status") == "duplex_active")
    busy.kill()
    events = await until(session, lambda e: isinstance(e, SessionClosed))
    feeder.cancel()
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert errors and errors[0].code == "worker_lost"
    assert events[-1] == SessionClosed("worker_lost")

    survivor = await client(gateway, connect_timeout=10).audio.connect(model=MODEL)
    assert not any(isinstance(e, SessionQueued) for e in await until(survivor, lambda e: isinstance(e, SessionReady)))
    await survivor.close()


async def test_a_wrong_api_key_is_refused_at_the_handshake(one_worker_gateway):
    gateway, _ = one_worker_gateway
    with pytest.raises(RealtimeError) as refused:
        await client(gateway, api_key="sk-wrong").audio.connect(model=MODEL)
    assert refused.value.code == "socket_create_failed"


class _Limits(BaseModel):
    audio_max_session_s: float = 600.0
    video_max_session_s: float = 300.0
    result_timeout_s: float = 30.0


class _ConfigWithRealtime(OmniConfig):
    """The config with a `realtime` section, as the gateway reads its per-mode session limits."""

    realtime: _Limits


@asynccontextmanager
async def in_process_gateway(worker, tmp_path, limits: _Limits):
    """A gateway served from this test's event loop, so that its config can carry `realtime` limits."""
    settings = GatewaySettings(config=_ConfigWithRealtime(realtime=limits), https=False,
                               static_workers=[StaticWorker(worker.host, worker.port)], data_dir=tmp_path)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, what="the in-process gateway to start")
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await serving


async def test_a_session_longer_than_its_modes_limit_is_closed_with_timeout(start_worker, tmp_path):
    async with in_process_gateway(start_worker(zero_delay=True), tmp_path, _Limits(audio_max_session_s=1.0)) as base_url:
        session = await RealtimeClient(api_key=API_KEY, base_url=base_url).audio.connect(model=MODEL)
        feeder = asyncio.create_task(feed(session, [silence()] * 100, pause_s=0.05))
        events = await until(session, lambda e: isinstance(e, SessionClosed))
        feeder.cancel()
        assert events[-1] == SessionClosed("timeout")


async def test_a_worker_that_hangs_mid_answer_ends_the_session_with_an_error(start_worker, tmp_path):
    worker = start_worker(zero_delay=True, fault="hang_after_chunks:0")
    async with in_process_gateway(worker, tmp_path, _Limits(result_timeout_s=1.0)) as base_url:
        session = await RealtimeClient(api_key=API_KEY, base_url=base_url).audio.connect(model=MODEL)
        feeder = asyncio.create_task(feed(session, a_reply()))
        events = await until(session, lambda e: isinstance(e, SessionClosed))
        feeder.cancel()
        assert [e.code for e in events if isinstance(e, ErrorEvent)] == ["worker_lost"]
