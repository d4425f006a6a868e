"""Legacy streaming (`WS /ws/streaming`, `POST /streaming/stop`), kept for the original's tests.

Multi-turn on one connection: `prefill` (one message each) -> `prefill_done`, `generate` ->
`chunk`s -> `done`. The worker is `busy_streaming` from the first `prefill` until `done`, and
idle between turns, as in the original. The streaming KV cache survives across connections unless
`clear_kv_cache` is sent (the original's fixed session id "streaming").
"""

from __future__ import annotations

import asyncio
import threading

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse

from omnikube.protocol import CLOSE_TRY_AGAIN_LATER, StreamingGenerate, StreamingPrefill, TokenStats, WorkerStatus

from . import metrics
from .backend import GenerateOptions
from .content import turns_from_lenient
from .context import WorkerContext, get_context, signal_stop
from .generation import final_chunk_frame, send_chunks, stream_reply
from .media import MediaError, decode_pcm16k
from .state import Busy, Lease, NotReady
from .wsio import BadFrame, Disconnected, FrameReader, close, parse, send_error, send_json

router = APIRouter()
TYPE = "streaming"


@router.post("/streaming/stop")
async def streaming_stop(request: Request) -> JSONResponse:
    if not signal_stop(get_context(request).streaming_stops):
        return JSONResponse({"success": False, "message": "No active streaming session"})
    return JSONResponse({"success": True, "message": "Stop signal sent"})


@router.websocket("/ws/streaming")
async def ws_streaming(ws: WebSocket) -> None:
    ctx = get_context(ws)
    if not ctx.state.ready:
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason="Worker not ready")
        return
    await ws.accept()
    session = StreamingSession(ctx, ws)
    ctx.streaming_stops.add(session.stop)
    try:
        await session.run()
    finally:
        ctx.streaming_stops.discard(session.stop)
        session.reader.cancel()
        await session.end_turn("client_left")
        await close(ws)


class StreamingSession:
    def __init__(self, ctx: WorkerContext, ws: WebSocket) -> None:
        self.ctx = ctx
        self.ws = ws
        self.stop = threading.Event()
        self.reader = FrameReader(ws, self.stop.set)
        self.lease: Lease | None = None
        self.voice = None
        self.session_id = "streaming"
        self.input_tokens = 0
        self.cached_tokens = 0

    async def run(self) -> None:
        while True:
            try:
                message = await self.reader.next()
                kind = message.get("type")
                if kind == "close":
                    return
                if kind == "stop":
                    continue  # already applied by the reader; nothing to answer
                if kind == "prefill":
                    await self._prefill(parse(StreamingPrefill, message, "prefill"))
                elif kind == "generate":
                    await self._generate(parse(StreamingGenerate, message, "generate"), message.get("sim_fault"))
                else:
                    raise BadFrame(f"Unknown message type: {kind}")
            except Disconnected:
                return
            except (BadFrame, MediaError) as exc:
                metrics.BAD_INPUT.labels(TYPE).inc()
                try:
                    await send_error(self.ws, str(exc))
                except Disconnected:
                    return

    async def _prefill(self, prefill: StreamingPrefill) -> None:
        if self.lease is None:
            try:
                self.lease = await self.ctx.state.acquire(WorkerStatus.busy_streaming, prefill.session_id or "streaming")
            except (Busy, NotReady) as exc:
                metrics.SESSIONS.labels(TYPE, "rejected_busy").inc()
                raise BadFrame(str(exc) if isinstance(exc, Busy) else "Worker not ready") from None
        self.session_id = prefill.session_id or "streaming"
        turns = await asyncio.to_thread(turns_from_lenient, prefill.messages)  # media decoding
        voice_b64 = prefill.tts_ref_audio_base64 or prefill.ref_audio_base64
        if voice_b64:
            self.voice = await asyncio.to_thread(decode_pcm16k, voice_b64, "tts_ref_audio_base64")
        if prefill.clear_kv_cache:
            await self.ctx.backend.stream_reset()
        self.cached_tokens = self.ctx.backend.kv_cache_length
        try:
            self.input_tokens = await self.ctx.backend.stream_prefill(turns, GenerateOptions(voice=self.voice))
        except Exception as exc:
            await self._model_error(exc)
            return
        prompt_length = sum(len(p) for t in turns for p in t.parts if isinstance(p, str))
        await send_json(self.ws, {"type": "prefill_done", "prompt_length": prompt_length, "message_count": len(turns),
                                  "cached_tokens": self.cached_tokens, "input_tokens": self.input_tokens, **self.ctx.info()})

    async def _generate(self, generate: StreamingGenerate, fault: object) -> None:
        if self.lease is None:
            raise BadFrame("Not prefilled: send prefill before generate")
        self.stop.clear()
        options = GenerateOptions(max_new_tokens=generate.max_new_tokens, length_penalty=generate.length_penalty,
                                  generate_audio=generate.generate_audio, voice=self.voice, use_tts_template=True,
                                  fault=fault if isinstance(fault, str) else None)
        try:
            reply = await stream_reply(self.ctx.backend, options, self.stop, TYPE, send_chunks(self.ws))
        except Disconnected:
            raise
        except Exception as exc:
            await self._model_error(exc)
            return
        if not reply.stopped:
            await send_json(self.ws, final_chunk_frame(reply))
        stats = TokenStats(cached_tokens=self.cached_tokens, input_tokens=self.input_tokens,
                           generated_tokens=reply.tokens, total_tokens=self.input_tokens + reply.tokens)
        await send_json(self.ws, {"type": "done", "elapsed_ms": round(reply.elapsed_ms, 1), "session_id": self.session_id,
                                  "stopped": reply.stopped, "token_stats": stats.model_dump(), **self.ctx.info()})
        await self.end_turn("stopped" if reply.stopped else "completed")

    async def _model_error(self, exc: Exception) -> None:
        await send_error(self.ws, f"{exc.__class__.__name__}: {exc}")
        await self.end_turn("error")

    async def end_turn(self, outcome: str) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            metrics.SESSIONS.labels(TYPE, outcome).inc()
            await lease.release()
