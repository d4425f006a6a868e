"""Full duplex (`WS /ws/duplex?session_id=`): audio-only (`adx_` ids) and omni (audio + frames).

One `result` per `audio_chunk`, strictly in order. `pause` starts a watchdog: a session paused
longer than its timeout gets `timeout` and is closed with 1000 "Pause timeout", which frees the
worker. Every bad frame gets an `error` and the session stays usable; the original closed silently
on some of them. Admission failures close with 1013 before accept, as in the original.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime

from fastapi import APIRouter, WebSocket

from omnikube.protocol import (AUDIO_DUPLEX_PREFIX, OUTPUT_SAMPLE_RATE, PAUSE_TIMEOUT_CLOSE_REASON,
                               DuplexAudioChunk, DuplexPause, DuplexPrepare, DuplexResult, WorkerStatus)

from . import metrics
from .backend import DuplexInput, DuplexOutput, DuplexSetup
from .context import WorkerContext, admit_websocket, get_context
from .media import (MAX_DUPLEX_CHUNK_S, MAX_FRAMES_PER_CHUNK, MediaError, b64decode, decode_image, decode_pcm16k,
                    encode_pcm)
from .recording import Recorder
from .state import Lease
from .wsio import BadFrame, Disconnected, close, parse, receive_json, send_error, send_json

router = APIRouter()

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sanitize_session_id(session_id: str | None) -> str | None:
    return _UNSAFE.sub("_", session_id)[:128] if session_id else None


@router.websocket("/ws/duplex")
async def ws_duplex(ws: WebSocket, session_id: str | None = None) -> None:
    ctx = get_context(ws)
    sid = sanitize_session_id(session_id)
    session_type = "audio_duplex" if sid and sid.startswith(AUDIO_DUPLEX_PREFIX) else "omni_duplex"
    current = f"{datetime.now():%Y%m%d_%H%M%S}_{sid or 'duplex'}"
    lease = await admit_websocket(ws, ctx, WorkerStatus.duplex_active, current, session_type)
    if lease is None:
        return
    session = DuplexSession(ctx, ws, lease, session_type, sid or "")
    outcome = "error"
    try:
        await ws.accept()
        outcome = await session.run()
    finally:
        metrics.SESSIONS.labels(session_type, outcome).inc()
        await lease.release(session.cleanup)
        await close(ws)


class DuplexSession:
    def __init__(self, ctx: WorkerContext, ws: WebSocket, lease: Lease, session_type: str, client_id: str) -> None:
        self.ctx = ctx
        self.client_id = client_id
        self.recorder: Recorder | None = None
        self.turns_done = 0
        self.ws = ws
        self.lease = lease
        self.type = session_type
        self.prepared = False
        self.deferred_finalize = True
        self.max_slice_nums = 1
        self.paused_until: float | None = None
        self.pause_timeout = ctx.settings.pause_timeout
        self.finalizing: asyncio.Task[None] | None = None
        self.speaking = False
        self.steps = 0

    async def run(self) -> str:
        """The receive loop; returns the session's outcome for the metrics."""
        while True:
            try:
                message = await self._receive()
            except asyncio.TimeoutError:
                await send_json(self.ws, {"type": "timeout", "reason": f"Pause timeout ({self.pause_timeout:g}s)"})
                await close(self.ws, 1000, PAUSE_TIMEOUT_CLOSE_REASON)
                return "timeout"
            except Disconnected:
                return "client_left"
            except BadFrame as exc:
                metrics.BAD_INPUT.labels(self.type).inc()
                if not await self._error(str(exc)):
                    return "client_left"
                continue
            try:
                outcome = await self._handle(message)
            except Disconnected:
                return "client_left"
            if outcome:
                return outcome

    async def _receive(self) -> dict:
        if self.paused_until is None:
            return await receive_json(self.ws)
        return await receive_json(self.ws, timeout=max(0.0, self.paused_until - time.monotonic()))

    async def _handle(self, message: dict) -> str | None:
        kind = message.get("type")
        try:
            if kind == "prepare":
                await self._prepare(parse(DuplexPrepare, message, "prepare"), message.get("sim_fault"))
            elif kind == "audio_chunk":
                await self._audio_chunk(message)
            elif kind == "pause":
                await self._pause(parse(DuplexPause, message, "pause"))
            elif kind == "resume":
                await self._resume()
            elif kind == "stop":
                await send_json(self.ws, {"type": "stopped"})
                await close(self.ws)
                return "stopped"
            elif kind == "interrupt":
                await send_json(self.ws, {"type": "interrupted"})
            else:
                raise BadFrame(f"Unknown message type: {kind}")
        except (BadFrame, MediaError) as exc:
            metrics.BAD_INPUT.labels(self.type).inc()
            await self._error(str(exc))
        return None

    async def _prepare(self, prepare: DuplexPrepare, fault: object) -> None:
        await self._await_finalize()
        # Reference voices may be files (MP3, M4A, ...): decoded off the event loop.
        ref = (await asyncio.to_thread(decode_pcm16k, prepare.ref_audio_base64, "ref_audio_base64")
               if prepare.ref_audio_base64 else None)
        tts_ref = (await asyncio.to_thread(decode_pcm16k, prepare.tts_ref_audio_base64, "tts_ref_audio_base64")
                   if prepare.tts_ref_audio_base64 else ref)
        max_slices = prepare.max_slice_nums or getattr(prepare.config, "max_slice_nums", None) or 1
        setup = DuplexSetup(system_prompt=prepare.system_prompt, ref_audio=ref, tts_ref_audio=tts_ref,
                            ref_audio_path=prepare.ref_audio_path, config=prepare.config,
                            max_slice_nums=max_slices, fault=fault if isinstance(fault, str) else None)
        try:
            prompt_length = await self.ctx.backend.duplex_prepare(setup)
        except Exception as exc:  # model failure: the session stays open, unprepared
            self.prepared = False
            await self._error(f"prepare failed: {exc.__class__.__name__}: {exc}")
            return
        self.prepared = True
        self.deferred_finalize = prepare.deferred_finalize
        self.max_slice_nums = max_slices
        self.speaking = False
        self.steps = 0
        await self._finish_recording()  # a second prepare starts a new recording
        self.turns_done = 0
        # The worker's own rule for recordings (the gateway's is the `adx_` prefix): omni* is omni.
        app_type = "omni_duplex" if self.client_id.startswith("omni") else "audio_duplex"
        config = {"system_prompt": prepare.system_prompt,
                  "ref_audio": prepare.ref_audio_path or self.ctx.settings.ref_audio_path,
                  "deferred_finalize": prepare.deferred_finalize, "max_slice_nums": max_slices,
                  **prepare.config.model_dump()}
        self.recorder = await self.ctx.recorder(self.lease.session_id or "", app_type, config)
        prepared = {"type": "prepared", "prompt_length": prompt_length}
        if self.recorder is not None:
            prepared["recording_session_id"] = self.recorder.session_id
        await send_json(self.ws, {**prepared, **self.ctx.info()})

    async def _audio_chunk(self, message: dict) -> None:
        received = time.monotonic()
        if self.paused_until is not None:
            raise BadFrame("Worker is paused")
        chunk = parse(DuplexAudioChunk, message, "audio_chunk")
        if not chunk.audio_base64:
            raise BadFrame("Missing audio_base64")
        if not self.prepared:
            raise BadFrame("Not prepared: send prepare before audio_chunk")
        audio = decode_pcm16k(chunk.audio_base64, "audio_base64", MAX_DUPLEX_CHUNK_S)
        frames_b64 = chunk.frame_base64_list or []
        if len(frames_b64) > MAX_FRAMES_PER_CHUNK:
            raise BadFrame(f"frame_base64_list: {len(frames_b64)} frames exceeds the limit of {MAX_FRAMES_PER_CHUNK}")
        frames = [await asyncio.to_thread(decode_image, f, f"frame_base64_list[{i}]") for i, f in enumerate(frames_b64)]
        await self._await_finalize()
        fault = message.get("sim_fault")
        step = DuplexInput(audio=audio, frames=frames, force_listen=chunk.force_listen,
                           max_slice_nums=chunk.max_slice_nums or self.max_slice_nums,
                           fault=fault if isinstance(fault, str) else None)
        try:
            output = await self.ctx.backend.duplex_step(step)
            if not self.deferred_finalize:
                await self.ctx.backend.duplex_finalize()
        except Exception as exc:
            await self._error(f"{exc.__class__.__name__}: {exc}")
            return
        result = self._result(output, received)
        await send_json(self.ws, result)
        self._record(result, output, audio, frames_b64[0] if frames_b64 else None, received)
        if self.deferred_finalize:
            self.finalizing = asyncio.create_task(self.ctx.backend.duplex_finalize())

    def _result(self, output: DuplexOutput, received: float) -> dict:
        now = time.monotonic()
        wall_s = now - received
        metrics.DUPLEX_STEP.labels(self.type).observe(wall_s)
        if not output.is_listen:
            if not self.speaking:  # first speaking step of a turn: its latency is the turn's TTFT
                metrics.TIME_TO_FIRST_TOKEN.labels(self.type).observe(wall_s)
                if output.audio is not None:
                    metrics.TIME_TO_FIRST_AUDIO.labels(self.type).observe(wall_s)
            metrics.TOKENS.labels(self.type).inc(output.n_tokens or 0)
            if output.audio is not None:
                metrics.AUDIO_SECONDS.labels(self.type).inc(output.audio.size / OUTPUT_SAMPLE_RATE)
        self.speaking = not output.is_listen and not output.end_of_turn
        self.steps += 1
        costs = {"cost_all_ms": wall_s * 1000.0, **output.costs_ms}
        costs = {k: (round(v, 1) if v else None) for k, v in costs.items()}
        result = DuplexResult(
            is_listen=output.is_listen, text=output.text,
            audio_data=encode_pcm(output.audio) if output.audio is not None else None,
            end_of_turn=output.end_of_turn, current_time=self.steps,
            n_tokens=output.n_tokens, n_tts_tokens=output.n_tts_tokens,
            server_send_ts=time.time(), wall_clock_ms=round(wall_s * 1000.0, 1),
            kv_cache_length=self.ctx.backend.kv_cache_length,
            vision_slices=output.vision_slices, vision_tokens=output.vision_slices * 64,
            **costs,
        )
        return result.model_dump()

    def _record(self, result: dict, output: DuplexOutput, audio, frame_b64: str | None, received: float) -> None:
        if self.recorder is None:
            return
        timing = {key[len("cost_"):]: result[key]
                  for key in ("cost_llm_ms", "cost_tts_prep_ms", "cost_tts_ms", "cost_token2wav_ms", "cost_all_ms")
                  if result.get(key) is not None}
        timing.update({key: result[key] for key in ("wall_clock_ms", "n_tokens", "n_tts_tokens", "kv_cache_length",
                                                    "vision_slices", "vision_tokens") if result.get(key) is not None})
        self.recorder.record_chunk(
            receive_ts_ms=round((received - self.recorder.started) * 1000.0, 1), user_audio=audio,
            frame=b64decode(frame_b64, "frame") if frame_b64 else None, turn=self.turns_done,
            is_listen=output.is_listen, text=output.text, ai_audio=output.audio, end_of_turn=output.end_of_turn,
            timing=timing)
        if output.end_of_turn:
            self.turns_done += 1

    async def _finish_recording(self) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            await recorder.finalize()

    async def _pause(self, pause: DuplexPause) -> None:
        self.pause_timeout = pause.timeout or self.ctx.settings.pause_timeout
        self.paused_until = time.monotonic() + self.pause_timeout
        self.lease.set_status(WorkerStatus.duplex_paused)
        await send_json(self.ws, {"type": "paused", "timeout": self.pause_timeout})

    async def _resume(self) -> None:
        if self.paused_until is None:
            raise BadFrame("Not paused: resume is only valid after pause")
        self.paused_until = None
        self.lease.set_status(WorkerStatus.duplex_active)
        await send_json(self.ws, {"type": "resumed"})

    async def _error(self, message: str) -> bool:
        """Send an `error`; False when the client is already gone."""
        try:
            await send_error(self.ws, message)
            return True
        except Disconnected:
            return False

    async def _await_finalize(self) -> None:
        task, self.finalizing = self.finalizing, None
        if task is not None:
            try:
                await task
            except Exception:  # a failed finalize must not take the next step down with it
                pass

    async def cleanup(self) -> None:
        """On every exit: finish pending work and free the duplex caches."""
        await self._await_finalize()
        await self._finish_recording()
        await self.ctx.backend.duplex_close()
