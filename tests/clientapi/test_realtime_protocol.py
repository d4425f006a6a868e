"""`/v1/realtime` spoken frame by frame: the browser's generation-1 frames, the handshake, bad input.

The SDK never sends malformed frames, so these tests use a plain WebSocket client.
"""

from __future__ import annotations

import base64
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .conftest import API_KEY, AUTH, eventually, silence, speech

pytestmark = pytest.mark.timeout(120)  # process start-up on a loaded machine dominates


def url(gateway, query: str = "mode=audio") -> str:
    return f"{gateway.ws_url}/v1/realtime?{query}&api_key={API_KEY}"


def append(chunk: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})


async def receive(ws) -> dict:
    return json.loads(await ws.recv())


async def until_type(ws, kind: str) -> list[dict]:
    seen = []
    while not seen or seen[-1]["type"] != kind:
        seen.append(await receive(ws))
    return seen


async def worker_released(gateway) -> bool:
    return gateway.get("/status", headers=AUTH).json()["idle_workers"] == 1


async def test_the_browsers_frames_hold_a_session_with_one_listen_event_per_listening_chunk(one_worker_gateway):
    gateway, _ = one_worker_gateway
    async with connect(url(gateway)) as ws:
        assert ws.subprotocol is None
        assert await receive(ws) == {"type": "session.queue_done"}
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Hi", "voice_config": {"length_penalty": 1.05}}}))
        created = await receive(ws)
        assert created["type"] == "session.created" and created["session_id"].startswith("rt_") and created["prompt_length"] > 0
        for chunk in [speech(), speech(), silence()]:
            await ws.send(append(chunk))
        listens = [await receive(ws) for _ in range(3)]
        assert [e["type"] for e in listens] == ["response.listen"] * 3 and listens[-1]["kv_cache_length"] > 0
        await ws.send(append(silence()))
        spoken = await receive(ws)
        assert spoken["type"] == "response.output_audio.delta" and spoken["text"] and spoken["audio"]
        await ws.send(json.dumps({"type": "session.close"}))
        closing = await until_type(ws, "session.closed")
        assert closing[-1]["reason"] == "user_stop" and closing[-1]["usage"]["output_tokens"] > 0
    await eventually(lambda: worker_released(gateway), what="the worker to be released")


async def test_the_realtime_subprotocol_is_selected_when_offered(one_worker_gateway):
    gateway, _ = one_worker_gateway
    async with connect(url(gateway), subprotocols=["map.realtime"]) as ws:
        assert ws.subprotocol == "map.realtime"


async def test_an_init_frame_sent_before_queue_done_is_kept_and_applied(one_worker_gateway):
    gateway, _ = one_worker_gateway
    async with connect(url(gateway)) as ws:
        await ws.send(json.dumps({"type": "session.init", "payload": {"system_prompt": "Early."}}))
        frames = await until_type(ws, "session.created")
        assert [f["type"] for f in frames] == ["session.queue_done", "session.created"]


async def test_invalid_json_is_answered_with_an_error_and_a_1003_close_and_frees_the_worker(one_worker_gateway):
    gateway, _ = one_worker_gateway
    async with connect(url(gateway)) as ws:
        await until_type(ws, "session.queue_done")
        await ws.send(json.dumps({"type": "session.init", "payload": {}}))
        await until_type(ws, "session.created")
        await ws.send("{this is not json")
        frames = await until_type(ws, "session.closed")
        assert frames[0]["type"] == "error" and frames[0]["error"]["code"] == "invalid_json"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 1003
    await eventually(lambda: worker_released(gateway), what="the worker to be released")


async def test_audio_before_the_init_frame_is_refused_as_not_ready(one_worker_gateway):
    gateway, _ = one_worker_gateway
    async with connect(url(gateway)) as ws:
        await until_type(ws, "session.queue_done")
        await ws.send(append(silence()))
        error = await until_type(ws, "error")
        assert error[-1]["error"]["code"] == "not_ready"


async def test_an_unknown_mode_is_refused_with_an_error(one_worker_gateway):
    gateway, _ = one_worker_gateway
    async with connect(url(gateway, "mode=screen")) as ws:
        assert (await receive(ws))["error"]["code"] == "invalid_mode"


async def test_a_client_that_leaves_while_queued_gives_its_place_up(one_worker_gateway):
    gateway, _ = one_worker_gateway
    async with connect(url(gateway)) as holder:
        await until_type(holder, "session.queue_done")
        async with connect(url(gateway)) as waiting:
            queued = await receive(waiting)
            assert queued["type"] == "session.queued" and queued["position"] == 1 and queued["ticket_id"].startswith("q_")
        await eventually(lambda: _queue_empty(gateway), what="the ticket to leave the queue")


async def _queue_empty(gateway) -> bool:
    return gateway.get("/api/queue", headers=AUTH).json()["queue_length"] == 0
