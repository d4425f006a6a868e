"""Turn-based chat: `POST /chat` (one JSON answer) and `WS /ws/chat` (one request, streamed reply).

Both are stateless: each request prefills its whole history from scratch. `POST /chat` returns its
audio as a 16-bit WAV file; `/ws/chat` streams raw float32 PCM (spec §8.1). Unlike the original,
bad input and model failures on `POST /chat` get a 4xx/5xx status, with the usual `ChatResponse`
body (`success: false`, `error`) so clients that only read the body still understand it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid

from fastapi import APIRouter, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from omnikube.protocol import (CLOSE_TRY_AGAIN_LATER, INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, ChatRequest, ChatResponse, TokenStats,
                               Sampling, WORKER_BUSY_ERROR, WorkerStatus, WsChatRequest)

from . import metrics
from .backend import Audio, GenerateOptions, Piece, Turn, Unsupported
from .content import turns_from_lenient, turns_from_messages
from .context import WorkerContext, get_context
from .generation import stream_reply
from .media import MAX_AUDIO_S, MediaError, decode_pcm16k, encode_pcm, encode_wav
from .recording import Recorder, chat_recording_id, last_user_text, numbered, raw_items
from .state import Busy, NotReady
from .wsio import BadFrame, Disconnected, close, parse, receive_json, send_error, send_json

router = APIRouter()

MAX_CHAT_BODY_BYTES = 128 * 1024 * 1024


@router.post("/chat", response_model=ChatResponse)
async def chat(request: Request) -> JSONResponse:
    ctx = get_context(request)
    if not ctx.state.ready:
        return _reject("chat", 503, "Worker not ready", "rejected_not_ready")
    body = await _read_body(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        chat_request = await asyncio.to_thread(ChatRequest.model_validate_json, body)  # up to 128 MiB
    except ValidationError as exc:
        metrics.BAD_INPUT.labels("chat").inc()
        raise RequestValidationError(exc.errors()) from None
    try:
        lease = await ctx.state.acquire(WorkerStatus.busy_chat)
    except NotReady:
        return _reject("chat", 503, "Worker not ready", "rejected_not_ready")
    except Busy as busy:
        return _reject("chat", 429, f"Worker busy, status: {busy.status.value}", "rejected_busy")
    try:
        return await _answer(ctx, chat_request, _fault(body))
    finally:
        await lease.release()


async def _answer(ctx: WorkerContext, chat_request: ChatRequest, fault: str | None) -> JSONResponse:
    started = time.monotonic()
    try:
        turns = await asyncio.to_thread(turns_from_messages, chat_request.messages)  # media decoding
        options = await asyncio.to_thread(_options, chat_request, fault)  # the voice may be a file to decode
    except MediaError as exc:
        metrics.BAD_INPUT.labels("chat").inc()
        metrics.SESSIONS.labels("chat", "error").inc()
        return _failure(ctx, 400, str(exc))
    recorder = await ctx.recorder(chat_recording_id(), "chat", {
        "system_prompt": _system_prompt(turns), "ref_audio": ctx.settings.ref_audio_path})
    try:
        return await _infer(ctx, chat_request, turns, options, started, recorder)
    finally:
        if recorder is not None:
            await recorder.finalize()


async def _infer(ctx: WorkerContext, chat_request: ChatRequest, turns: list[Turn], options: GenerateOptions,
                 started: float, recorder: Recorder | None) -> JSONResponse:
    try:
        result = await ctx.backend.chat(turns, options)
    except Unsupported as exc:  # the loaded model cannot do what was asked: the request's problem
        metrics.SESSIONS.labels("chat", "error").inc()
        return _failure(ctx, 422, str(exc))
    except Exception as exc:  # a model failure: report it, keep serving
        metrics.SESSIONS.labels("chat", "error").inc()
        return _failure(ctx, 500, f"{exc.__class__.__name__}: {exc}")
    duration_ms = (time.monotonic() - started) * 1000.0
    ctx.state.record_chat(duration_ms)
    ctx.state.pace.add(duration_ms, result.generated_tokens)
    metrics.SESSIONS.labels("chat", "completed").inc()
    metrics.TIME_TO_FIRST_TOKEN.labels("chat").observe(duration_ms / 1000.0)
    metrics.TOKENS.labels("chat").inc(result.generated_tokens)
    audio_data = None
    if result.audio is not None:
        wav = await asyncio.to_thread(encode_wav, result.audio)
        audio_data = base64.b64encode(wav).decode("ascii")
        metrics.TIME_TO_FIRST_AUDIO.labels("chat").observe(duration_ms / 1000.0)
        metrics.AUDIO_SECONDS.labels("chat").inc(result.audio.size / OUTPUT_SAMPLE_RATE)
    response = ChatResponse(
        **ctx.info(), text=result.text, audio_data=audio_data, tokens_generated=result.generated_tokens,
        duration_ms=round(duration_ms, 1), prompt=result.prompt if chat_request.return_prompt else None,
        token_stats=TokenStats(input_tokens=result.input_tokens, generated_tokens=result.generated_tokens,
                               total_tokens=result.input_tokens + result.generated_tokens),
    )
    if recorder is not None:
        recorder.record_turn(0, 0.0, {"text": last_user_text(turns)}, result.text, result.audio,
                             {"elapsed_ms": round(duration_ms, 1), "tokens": result.generated_tokens})
        response.recording_session_id = recorder.session_id
    return JSONResponse(response.model_dump())


def _sampling(generation: Sampling) -> dict[str, object]:
    return generation.model_dump(include={"do_sample", "temperature", "top_p", "top_k", "seed"})


def _options(chat_request: ChatRequest, fault: str | None) -> GenerateOptions:
    tts = chat_request.tts
    voice = decode_pcm16k(tts.ref_audio_data, "tts.ref_audio_data", MAX_AUDIO_S) if tts.ref_audio_data else None
    return GenerateOptions(
        max_new_tokens=chat_request.generation.max_new_tokens,
        **_sampling(chat_request.generation),
        length_penalty=chat_request.generation.length_penalty,
        generate_audio=tts.enabled,
        voice=voice,
        voice_path=tts.ref_audio_path,
        voice_prompt_max_ms=tts.ref_audio_max_ms,
        tts_mode=tts.mode,
        language=tts.language,
        max_slice_nums=chat_request.image.max_slice_nums,
        use_image_id=chat_request.image.use_image_id,
        tts_sampling=tts.sampling.model_dump(),
        use_tts_template=chat_request.use_tts_template or tts.enabled,
        omni_mode=chat_request.omni_mode,
        enable_thinking=chat_request.enable_thinking,
        fault=fault,
    )


async def _read_body(request: Request) -> bytes | JSONResponse:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_CHAT_BODY_BYTES:
        return _too_large()
    body = bytearray()
    async for part in request.stream():
        body.extend(part)
        if len(body) > MAX_CHAT_BODY_BYTES:
            return _too_large()
    return bytes(body)


def _too_large() -> JSONResponse:
    metrics.BAD_INPUT.labels("chat").inc()
    return JSONResponse({"detail": f"Request body exceeds {MAX_CHAT_BODY_BYTES} bytes"}, status_code=413)


def _reject(session_type: str, status_code: int, detail: str, outcome: str) -> JSONResponse:
    metrics.SESSIONS.labels(session_type, outcome).inc()
    return JSONResponse({"detail": detail}, status_code=status_code)


def _failure(ctx: WorkerContext, status_code: int, error: str) -> JSONResponse:
    body = ChatResponse(**ctx.info(), success=False, error=error).model_dump()
    body["detail"] = error
    return JSONResponse(body, status_code=status_code)


def _fault(body: bytes) -> str | None:
    """`sim_fault` of a request body (simulated backend only; the real one ignores it)."""
    try:
        value = json.loads(body).get("sim_fault")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# ---- WS /ws/chat ------------------------------------------------------------------------------------

@router.websocket("/ws/chat")
async def ws_chat(ws: WebSocket) -> None:
    ctx = get_context(ws)
    if not ctx.state.ready:
        metrics.SESSIONS.labels("chat_ws", "rejected_not_ready").inc()
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason="Worker not ready")
        return
    await ws.accept()
    try:
        data = await receive_json(ws)
        request = parse(WsChatRequest, data, "chat request")
    except Disconnected:
        return
    except BadFrame as exc:
        metrics.BAD_INPUT.labels("chat_ws").inc()
        await _send_final_error(ws, str(exc))
        return
    try:
        lease = await ctx.state.acquire(WorkerStatus.busy_half_duplex, f"chat_ws_{uuid.uuid4().hex[:8]}")
    except (Busy, NotReady) as exc:
        metrics.SESSIONS.labels("chat_ws", "rejected_busy").inc()
        await _send_final_error(ws, WORKER_BUSY_ERROR if isinstance(exc, Busy) else "Worker not ready")
        return
    outcome = "error"
    try:
        outcome = await _ws_chat_session(ctx, ws, request, data.get("sim_fault"))
    finally:
        metrics.SESSIONS.labels("chat_ws", outcome).inc()
        await lease.release()
        await close(ws)


async def _ws_chat_session(ctx: WorkerContext, ws: WebSocket, request: WsChatRequest, fault: object) -> str:
    started = time.monotonic()
    stop = threading.Event()
    recorder: Recorder | None = None
    # The client aborts by closing the socket; notice it even while nothing is being sent.
    watcher = asyncio.create_task(_watch_disconnect(ws, stop))
    try:
        try:
            turns = await asyncio.to_thread(turns_from_lenient, request.messages)  # media decoding
            if not turns:
                raise MediaError("messages: no usable content (every item was empty or of an unknown type)")
            voice = (await asyncio.to_thread(decode_pcm16k, request.tts.ref_audio_data, "tts.ref_audio_data")
                     if request.tts.ref_audio_data else None)
        except MediaError as exc:
            metrics.BAD_INPUT.labels("chat_ws").inc()
            await send_error(ws, str(exc))
            return "error"
        recorder = await ctx.recorder(chat_recording_id(), "chat", {
            "system_prompt": _system_prompt(turns), "ref_audio": ctx.settings.ref_audio_path,
            "streaming": request.streaming})
        options = GenerateOptions(
            max_new_tokens=request.generation.max_new_tokens, length_penalty=request.generation.length_penalty,
            **_sampling(request.generation), generate_audio=request.tts.enabled, voice=voice, max_slice_nums=request.image.max_slice_nums,
            use_tts_template=request.use_tts_template or request.tts.enabled, omni_mode=request.omni_mode,
            enable_thinking=request.enable_thinking, fault=fault if isinstance(fault, str) else None,
        )
        try:
            await ctx.backend.stream_reset()
            input_tokens = await ctx.backend.stream_prefill(turns, options)
            await send_json(ws, {"type": "prefill_done", "input_tokens": input_tokens, **ctx.info()})

            async def send_chunk(piece: Piece, _: int) -> None:
                if request.streaming and (piece.text or piece.audio is not None):
                    chunk: dict[str, object] = {"type": "chunk"}
                    if piece.text:
                        chunk["text_delta"] = piece.text
                    if piece.audio is not None and piece.audio.size:
                        chunk["audio_data"] = encode_pcm(piece.audio)
                    await send_json(ws, chunk)

            reply = await stream_reply(ctx.backend, options, stop, "chat_ws", send_chunk, started)
        except Disconnected:
            stop.set()
            return "client_left"
        except Exception as exc:  # a model failure
            if stop.is_set():
                return "client_left"
            await _send_final_error(ws, f"{exc.__class__.__name__}: {exc}")
            return "error"
        if stop.is_set():
            return "client_left"
        ctx.state.pace.add(reply.elapsed_ms, reply.tokens)
        done: dict[str, object] = {"type": "done", "text": reply.text, "generated_tokens": reply.tokens,
                                   "input_tokens": input_tokens, **ctx.info()}
        if not request.streaming:
            audio = reply.joined_audio()
            done["audio_data"] = encode_pcm(audio) if audio is not None else None
        if recorder is not None:
            recorder.record_turn(0, 0.0, _ws_input(recorder, turns, request.messages), reply.text, reply.joined_audio(),
                                 {"elapsed_ms": round(reply.elapsed_ms, 1), "tokens": reply.tokens,
                                  "input_tokens": input_tokens})
            done["recording_session_id"] = recorder.session_id
        try:
            await send_json(ws, done)
        except Disconnected:
            return "client_left"
        return "completed"
    finally:
        watcher.cancel()
        if recorder is not None:
            await recorder.finalize()


async def _watch_disconnect(ws: WebSocket, stop: threading.Event) -> None:
    """Later frames on /ws/chat are ignored (as in the original); a disconnect stops generation."""
    while True:
        try:
            await receive_json(ws)
        except BadFrame:
            continue
        except Disconnected:
            stop.set()
            return


async def _send_final_error(ws: WebSocket, message: str) -> None:
    try:
        await send_error(ws, message)
    except Disconnected:
        pass
    await close(ws)


def _system_prompt(turns: list[Turn]) -> str | None:
    system = next((t for t in turns if t.role == "system"), None)
    return None if system is None else " ".join(p for p in system.parts if isinstance(p, str))


def _ws_input(recorder: Recorder, turns: list[Turn], messages: list[dict]) -> dict[str, object]:
    """The recorded input of a /ws/chat turn: the last user text, its audio, images and videos."""
    summary: dict[str, object] = {"text": last_user_text(turns)}
    user = next((t for t in reversed(turns) if t.role == "user"), None)
    audio = [p.samples for p in (user.parts if user else []) if isinstance(p, Audio)]
    for index, samples in enumerate(audio):
        summary["audio"] = recorder.save_wav(f"user_audio/{numbered(index)}.wav", samples, INPUT_SAMPLE_RATE)
    for kind, folder, name, extension in (("image", "user_images", "img", "jpg"), ("video", "user_videos", "vid", "mp4")):
        raws = raw_items(messages, kind)
        if raws:
            summary[f"{kind}s"] = [recorder.save_raw(f"{folder}/{name}_{k}.{extension}", raw) for k, raw in enumerate(raws)]
    return summary
