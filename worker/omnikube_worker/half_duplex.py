"""Half duplex (`WS /ws/half_duplex?session_id=`): voice turns cut by the worker's own VAD.

The conversation's KV cache lives for the connection: `prepare` resets it and prefills the system
message, each user speech segment is prefilled on top, and the reply streams as `chunk`s ending in
`turn_done`. Improvements on the original: one session at a time here too (close 1013 when busy),
`stop` is honoured mid-turn (frames are read while the reply streams), and bad frames get `error`.
`POST /half_duplex/stop` stops the reply in flight of every open session.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse

from omnikube.protocol import (DEFAULT_SYSTEM_PROMPT, INPUT_SAMPLE_RATE, HalfDuplexAudioChunk,
                               HalfDuplexPrepare, WorkerStatus)

from . import metrics
from .backend import Audio, GenerateOptions, Turn
from .content import parts_from_lenient
from .context import WorkerContext, admit_websocket, get_context, signal_stop
from .duplex import sanitize_session_id
from .generation import final_chunk_frame, send_chunks, stream_reply
from .media import MAX_DUPLEX_CHUNK_S, MediaError, decode_pcm16k
from .recording import Recorder, numbered
from .vad import SileroVad, VadUnavailable
from .wsio import BadFrame, Disconnected, FrameReader, close, parse, send_error, send_json

router = APIRouter()
TYPE = "half_duplex"


@router.post("/half_duplex/stop")
async def half_duplex_stop(request: Request) -> JSONResponse:
    count = signal_stop(get_context(request).half_duplex_stops)
    if not count:
        return JSONResponse({"success": False, "message": "No active half-duplex session"})
    return JSONResponse({"success": True, "message": f"Stop signal sent to {count} session(s)"})


@router.websocket("/ws/half_duplex")
async def ws_half_duplex(ws: WebSocket, session_id: str | None = None) -> None:
    ctx = get_context(ws)
    sid = sanitize_session_id(session_id) or f"hdx_{uuid.uuid4().hex[:8]}"
    lease = await admit_websocket(ws, ctx, WorkerStatus.busy_half_duplex, sid, TYPE)
    if lease is None:
        return
    session: HalfDuplexSession | None = None
    outcome = "error"
    try:
        await ws.accept()
        session = HalfDuplexSession(ctx, ws, sid)
        ctx.half_duplex_stops.add(session.turn_stop)
        outcome = await session.run()
    finally:
        if session is not None:
            ctx.half_duplex_stops.discard(session.turn_stop)
            session.reader.cancel()
            await session.finish_recording()
        metrics.SESSIONS.labels(TYPE, outcome).inc()
        await lease.release()
        await close(ws)


class HalfDuplexSession:
    def __init__(self, ctx: WorkerContext, ws: WebSocket, session_id: str) -> None:
        self.ctx = ctx
        self.ws = ws
        self.session_id = session_id
        self.turn_stop = threading.Event()   # stops the reply in flight (stop frame, POST /half_duplex/stop)
        self.ended = False                   # a `stop` frame ends the whole session
        self.reader = FrameReader(ws, self._on_stop_frame)
        self.prepare: HalfDuplexPrepare | None = None
        self.voice = None
        self.vad: SileroVad | None = None
        self.deadline: float | None = None
        self.started = time.monotonic()
        self.turns = 0
        self.recorder: Recorder | None = None

    def _on_stop_frame(self) -> None:
        self.ended = True
        self.turn_stop.set()

    async def run(self) -> str:
        while True:
            try:
                timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
                message = await self.reader.next(timeout)
            except asyncio.TimeoutError:
                await send_json(self.ws, {"type": "timeout", "elapsed_s": round(time.monotonic() - self.started, 1)})
                return "timeout"
            except Disconnected:
                return "client_left"
            except BadFrame as exc:
                await self._bad(str(exc))
                continue
            try:
                outcome = await self._handle(message)
            except Disconnected:
                return "client_left"
            except (BadFrame, MediaError) as exc:
                await self._bad(str(exc))
                continue
            if outcome:
                return outcome

    async def _handle(self, message: dict) -> str | None:
        kind = message.get("type")
        if kind == "stop":
            return "stopped"  # no reply, as in the original; the socket is closed
        if self.ended:
            return "stopped"
        if kind == "prepare":
            await self._prepare(parse(HalfDuplexPrepare, message, "prepare"))
        elif kind == "audio_chunk":
            chunk = parse(HalfDuplexAudioChunk, message, "audio_chunk")
            if self.prepare is None:
                raise BadFrame("Not prepared yet")
            if chunk.audio_base64:
                await self._audio(decode_pcm16k(chunk.audio_base64, "audio_base64", MAX_DUPLEX_CHUNK_S),
                                  message.get("sim_fault"))
        else:
            raise BadFrame(f"Unknown type: {kind}")
        return "stopped" if self.ended else None

    async def _prepare(self, prepare: HalfDuplexPrepare) -> None:
        try:  # the first session of the process loads the model (~0.1 s), so off the event loop
            vad = await asyncio.to_thread(SileroVad, prepare.config.vad)
        except VadUnavailable as exc:
            self.prepare = None
            await send_error(self.ws, f"prepare failed: voice activity detection is unavailable: {exc}")
            return
        items = [i for i in prepare.system_content if isinstance(i, dict) and i.get("type") in ("text", "audio")]
        parts = await asyncio.to_thread(parts_from_lenient, items, "system_content")
        if not any(isinstance(p, str) for p in parts):
            parts.insert(0, DEFAULT_SYSTEM_PROMPT)
        self.voice = next((p.samples for p in parts if isinstance(p, Audio)), None)
        try:
            await self.ctx.backend.stream_reset()
            await self.ctx.backend.stream_prefill([Turn("system", parts)], self._options())
        except Exception as exc:  # model failure: the session stays open, unprepared
            self.prepare = None
            await send_error(self.ws, f"prepare failed: {exc.__class__.__name__}: {exc}")
            return
        self.prepare = prepare
        self.vad = vad
        self.started = time.monotonic()
        self.deadline = self.started + prepare.config.session.timeout_s
        await self.finish_recording()  # a second prepare starts a new recording
        config = prepare.config
        self.recorder = await self.ctx.recorder(self.session_id, "half_duplex_audio", {
            "system_content_count": len(prepare.system_content), "vad": config.vad.model_dump(),
            "generation": config.generation.model_dump(), "tts_enabled": config.tts.enabled,
            "timeout_s": config.session.timeout_s})
        prepared = {"type": "prepared", "session_id": self.session_id, "timeout_s": config.session.timeout_s}
        if self.recorder is not None:
            prepared["recording_session_id"] = self.session_id
        await send_json(self.ws, {**prepared, **self.ctx.info()})

    def _options(self, fault: object = None) -> GenerateOptions:
        config = self.prepare.config if self.prepare else None
        return GenerateOptions(
            max_new_tokens=config.generation.max_new_tokens if config else 256,
            length_penalty=config.generation.length_penalty if config else 1.1,
            temperature=config.generation.temperature if config else 0.7,
            generate_audio=config.tts.enabled if config else True, voice=self.voice, use_tts_template=True,
            fault=fault if isinstance(fault, str) else None,
        )

    async def _audio(self, samples, fault: object) -> None:
        # ~4 ms of CPU per second of audio (docs/benchmarks.md): small, but not the event loop's.
        for event in await asyncio.to_thread(self.vad.feed, samples):
            if event.kind == "start":
                await send_json(self.ws, {"type": "vad_state", "speaking": True})
            elif event.kind == "discard":
                await send_json(self.ws, {"type": "vad_state", "speaking": False})
            elif event.segment is not None:
                await self._turn(event.segment, fault)
                self.vad.reset()
                return  # audio after the segment belongs to the next turn; like the original, it is dropped

    async def _turn(self, segment, fault: object) -> None:
        ended_at = time.monotonic()
        await send_json(self.ws, {"type": "vad_state", "speaking": False})
        await send_json(self.ws, {"type": "generating", "speech_duration_ms": int(segment.size * 1000 / INPUT_SAMPLE_RATE)})
        self.turn_stop.clear()
        if self.ended:
            self.turn_stop.set()
        options = self._options(fault)
        try:
            await self.ctx.backend.stream_prefill([Turn("user", [Audio(segment)])], options)
            reply = await stream_reply(self.ctx.backend, options, self.turn_stop, TYPE, send_chunks(self.ws), ended_at)
        except Disconnected:
            raise
        except Exception as exc:  # model failure: report it, the session continues
            await send_error(self.ws, f"{exc.__class__.__name__}: {exc}")
            return
        if not reply.stopped:
            await send_json(self.ws, final_chunk_frame(reply))
        if self.recorder is not None:
            speech_ms = int(segment.size * 1000 / INPUT_SAMPLE_RATE)
            user_audio = self.recorder.save_wav(f"user_audio/{numbered(self.turns)}.wav", segment, INPUT_SAMPLE_RATE)
            self.recorder.record_turn(
                self.turns, round((ended_at - self.started) * 1000.0, 1),
                {"type": "voice", "duration_ms": speech_ms, "audio": user_audio}, reply.text, reply.joined_audio(),
                {"elapsed_ms": round(reply.elapsed_ms, 1), "speech_input_ms": speech_ms})
        self.turns += 1
        await send_json(self.ws, {"type": "turn_done", "turn_index": self.turns, "text": reply.text, **self.ctx.info()})

    async def finish_recording(self) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            await recorder.finalize()

    async def _bad(self, message: str) -> None:
        metrics.BAD_INPUT.labels(TYPE).inc()
        try:
            await send_error(self.ws, message)
        except Disconnected:
            pass
