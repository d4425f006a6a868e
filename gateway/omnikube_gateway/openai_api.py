"""OpenAI-compatible `/v1/chat/completions` and `/v1/models`.

A completion is one turn on a worker's `/ws/chat` (streaming, so text and audio arrive as they
are made), holding a worker leased from the same queue as every other session. A `CompletionJob`
runs that turn in its own task and reports plain events; the handler turns them into one JSON
answer or into server-sent events in OpenAI's chunk shape. The job owns the lease, so the worker
is released however the HTTP side ends (answered, client gone, stream never read).

Not the worker's: `stop` sequences are applied here on the relayed text; audio output is
converted from the worker's float32 24 kHz PCM to WAV or pcm16; usage comes from the worker's
`input_tokens` / `generated_tokens`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from omnikube.protocol import Refusal, RefusalReason, TaskType, WsChatGeneration, loads_object

from . import metrics
from .auth import require_api_key
from .budget import requested_tokens
from .client_session import Refused, send_request, wait_disconnect, worker_session
from .dispatch import QueueUpdate
from .openai_audio import b64decode_strict, b64encode, float32_to_pcm16, float32_to_wav
from .openai_errors import (OpenAIError, invalid_request, model_failed, outcome, queue_full, unauthorized, unavailable,
                            worker_failed)
from .openai_messages import ChatCompletionRequest, parse_request, to_worker_request
from .openai_voices import resolve_voice
from .storage import read_limited

log = logging.getLogger(__name__)
router = APIRouter()

MAX_BODY_BYTES = 64 * 1024 * 1024
AUDIO_TTL_S = 3600
OWNER = "openbmb"
ALIAS = "minicpm-o-4.5"


# ---- models ------------------------------------------------------------------------------------

def model_ids(app: Any) -> list[str]:
    settings = getattr(app.state, "settings", None)
    path = settings.config.model.model_path if settings is not None else "openbmb/MiniCPM-o-4_5"
    ids = [path, ALIAS]
    basename = path.rstrip("/").rsplit("/", 1)[-1]
    if basename not in ids:
        ids.append(basename)
    return ids


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": OWNER}


async def _authorize(request: Request) -> None:
    try:
        await require_api_key(request)
    except HTTPException as exc:
        raise unauthorized(str(exc.detail)) from None


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    try:
        await _authorize(request)
    except OpenAIError as exc:
        return _refused("models", exc)
    metrics.CLIENT_API.labels("models", "ok").inc()
    return JSONResponse({"object": "list", "data": [_model_object(m) for m in model_ids(request.app)]})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Response:
    try:
        await _authorize(request)
        if model_id not in model_ids(request.app):
            raise OpenAIError(404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model")
    except OpenAIError as exc:
        return _refused("models", exc)
    metrics.CLIENT_API.labels("models", "ok").inc()
    return JSONResponse(_model_object(model_id))


def _refused(api: str, exc: OpenAIError) -> Response:
    metrics.CLIENT_API.labels(api, outcome(exc)).inc()
    return exc.response()


# ---- the job -----------------------------------------------------------------------------------

@dataclass
class Event:
    kind: str  # queued | assigned | text | audio | done | error
    text: str = ""
    audio: bytes = b""          # float32 24 kHz PCM
    update: QueueUpdate | None = None
    input_tokens: int = 0
    generated_tokens: int = 0
    error: OpenAIError | None = None


class _WorkerLost(Exception):
    pass


@dataclass
class CompletionJob:
    """One completion on one leased worker, run as its own task, reported through `events`."""

    dispatcher: Any
    task_type: TaskType
    frame: dict[str, Any]
    timeout_s: float
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None

    @property
    def token_budget(self) -> int | None:
        """The request's `max_new_tokens`, for the ETA (budget.py)."""
        return requested_tokens(self.frame, WsChatGeneration)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="chat-completion")

    async def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _queued(self, update: QueueUpdate) -> None:
        self.events.put_nowait(Event("queued", update=update))

    async def _run(self) -> None:
        try:
            async with worker_session(self.dispatcher, self.task_type, "/ws/chat", on_update=self._queued,
                                      opening=self._request, max_new_tokens=self.token_budget) as (lease, worker, first):
                self.events.put_nowait(Event("assigned"))
                try:
                    await asyncio.wait_for(self._talk(worker, first), self.timeout_s)
                except _WorkerLost as exc:
                    lease.fail(str(exc))
                    raise worker_failed(f"The worker failed during the request: {exc}") from None
        except Refused as refused:
            self._fail(_refusal_error(refused.refusal))
        except asyncio.TimeoutError:
            self._fail(unavailable(f"The request took longer than {self.timeout_s:g} s.", code="timeout"))
        except OpenAIError as exc:
            self._fail(exc)
        except Exception as exc:  # a bug of ours: answer rather than leave the client waiting
            log.exception("chat completion failed")
            self._fail(OpenAIError(500, f"Internal error: {exc.__class__.__name__}", type="server_error", code="internal_error"))

    def _fail(self, error: OpenAIError) -> None:
        self.events.put_nowait(Event("error", error=error))

    async def _request(self, worker: ClientConnection) -> list[str | bytes]:
        try:
            return await send_request(worker, json.dumps(self.frame))
        except ConnectionClosed as exc:
            raise worker_failed(f"The worker failed during the request: connection lost ({exc})") from None

    async def _talk(self, worker: ClientConnection, first: list[str | bytes]) -> None:
        input_tokens = 0
        pending = list(first)
        try:
            while True:
                frame = loads_object(pending.pop(0) if pending else await worker.recv())
                kind = frame.get("type")
                if kind == "prefill_done":
                    input_tokens = int(frame.get("input_tokens") or 0)
                elif kind == "chunk":
                    audio = b64decode_strict(frame["audio_data"], "audio") if frame.get("audio_data") else b""
                    self.events.put_nowait(Event("text" if not audio else "audio", text=frame.get("text_delta") or "", audio=audio))
                elif kind == "done":
                    self.events.put_nowait(Event(
                        "done",
                        text=frame.get("text") or "",
                        input_tokens=int(frame.get("input_tokens") or input_tokens),
                        generated_tokens=int(frame.get("generated_tokens") or 0),
                    ))
                    return
                elif kind == "error":
                    message_text = str(frame.get("error") or "inference failed")
                    raise model_failed(f"The model failed: {message_text}")
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                raise _WorkerLost("the worker closed the connection before answering") from None
            raise _WorkerLost(f"connection lost ({exc})") from None
        except (ValueError, KeyError) as exc:
            raise _WorkerLost(f"unreadable worker frame ({exc})") from None


def _refusal_error(refusal: Refusal) -> OpenAIError:
    """The engine's refusal as the error OpenAI clients expect for it."""
    if refusal.reason is RefusalReason.queue_full:
        return queue_full(f"{refusal.message}; retry later.", refusal.retry_after_s or 1)
    if refusal.reason is RefusalReason.queue_timeout:
        return unavailable(f"No worker became free in time: {refusal.message}", code="no_worker_available", retry_after=5)
    if refusal.reason is RefusalReason.cancelled:
        return unavailable("The request was cancelled by an operator.", code="cancelled")
    return worker_failed(refusal.message)


# ---- stop sequences ----------------------------------------------------------------------------

class StopScanner:
    """Cut relayed text at the first stop sequence, holding back only what could start one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        keep = len(self.pending) - self.hold if self.hold else len(self.pending)
        out, self.pending = self.pending[:max(keep, 0)], self.pending[max(keep, 0):]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


# ---- answers -----------------------------------------------------------------------------------

@dataclass
class Answer:
    """What the handler accumulates from job events, for either answer shape."""

    request: ChatCompletionRequest
    completion_id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    audio_id: str = field(default_factory=lambda: "audio_" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    text: str = ""
    audio: bytearray = field(default_factory=bytearray)  # float32 24 kHz, as the worker sent it
    input_tokens: int = 0
    generated_tokens: int = 0

    def __post_init__(self) -> None:
        self.scanner = StopScanner(self.request.stop_sequences)

    @property
    def finish_reason(self) -> str:
        if self.scanner.stopped:
            return "stop"
        return "length" if self.generated_tokens >= self.request.token_limit else "stop"

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.generated_tokens,
            "total_tokens": self.input_tokens + self.generated_tokens,
        }

    def take_text(self, text: str) -> str:
        kept = self.scanner.feed(text)
        self.text += kept
        return kept

    def take_audio(self, audio: bytes) -> bytes:
        if self.scanner.stopped or not self.request.wants_audio:
            return b""
        self.audio += audio
        return float32_to_pcm16(audio)

    def finish(self, event: Event) -> str:
        self.input_tokens, self.generated_tokens = event.input_tokens, event.generated_tokens
        rest = self.scanner.flush()
        self.text += rest
        return rest

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.request.model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    async def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": None, "annotations": []}
        if self.request.wants_audio:
            assert self.request.audio is not None
            convert = float32_to_wav if self.request.audio.format == "wav" else float32_to_pcm16
            data = await asyncio.to_thread(convert, bytes(self.audio))
            message["content"] = None
            message["audio"] = {"id": self.audio_id, "data": b64encode(data), "transcript": self.text,
                                "expires_at": self.created + AUDIO_TTL_S}
        return {
            "id": self.completion_id, "object": "chat.completion", "created": self.created,
            "model": self.request.model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}],
            "usage": self.usage(),
        }


async def _while_connected(job: CompletionJob, request: Request) -> AsyncIterator[Event]:
    """The job's events, until the HTTP client goes away."""
    watcher = asyncio.create_task(wait_disconnect(request))
    try:
        while True:
            getter = asyncio.create_task(job.events.get())
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return
            yield getter.result()
    finally:
        watcher.cancel()


async def _client_left(job: CompletionJob) -> Response:
    await job.cancel()
    metrics.CLIENT_API.labels("chat_completions", "client_left").inc()
    return Response(status_code=499)


async def _complete(request: Request, job: CompletionJob, answer: Answer) -> Response:
    async with aclosing(_while_connected(job, request)) as events:
        async for event in events:
            if event.kind == "error":
                return _refused("chat_completions", event.error)
            if event.kind in ("text", "audio"):
                answer.take_text(event.text)
                answer.take_audio(event.audio)
            elif event.kind == "done":
                answer.finish(event)
                metrics.CLIENT_API.labels("chat_completions", "ok").inc()
                return JSONResponse(await answer.completion())
    return await _client_left(job)


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def _stream_events(job: CompletionJob, answer: Answer, first: Event) -> AsyncIterator[bytes]:
    audio = answer.request.wants_audio
    event: Event | None = first
    ended = "client_left"
    try:
        while event is not None:
            if event.kind == "queued" and event.update is not None:
                # SSE comments: ignored by clients, but they keep proxies from timing the stream out.
                yield f": queued position={event.update.position} estimated_wait_s={event.update.estimated_wait_s:.0f}\n\n".encode()
            elif event.kind == "assigned":
                yield _sse(answer.chunk({"role": "assistant", "content": None if audio else ""}))
            elif event.kind in ("text", "audio", "done"):
                text = answer.finish(event) if event.kind == "done" else answer.take_text(event.text)
                pcm16 = answer.take_audio(event.audio) if event.kind != "done" else b""
                if audio and (text or pcm16):
                    delta = {"id": answer.audio_id, "transcript": text}
                    if pcm16:
                        delta["data"] = b64encode(pcm16)
                    yield _sse(answer.chunk({"audio": delta}))
                elif text:
                    yield _sse(answer.chunk({"content": text}))
                if event.kind == "done":
                    if audio:
                        yield _sse(answer.chunk({"audio": {"id": answer.audio_id, "expires_at": answer.created + AUDIO_TTL_S}}))
                    yield _sse(answer.chunk({}, answer.finish_reason))
                    options = answer.request.stream_options
                    if options is not None and options.include_usage:
                        usage_chunk = answer.chunk({})
                        usage_chunk["choices"], usage_chunk["usage"] = [], answer.usage()
                        yield _sse(usage_chunk)
                    yield _sse("[DONE]")
                    ended = "ok"
                    return
            elif event.kind == "error" and event.error is not None:
                yield _sse(event.error.body())
                ended = outcome(event.error)
                return
            event = await job.events.get()
    finally:
        metrics.CLIENT_API.labels("chat_completions", ended).inc()
        await job.cancel()


async def _stream(request: Request, job: CompletionJob, answer: Answer) -> Response:
    # The first event (queued, assigned or a refusal) decides between an error status and a stream.
    async with aclosing(_while_connected(job, request)) as events:
        first = await anext(events, None)
    if first is None:
        return await _client_left(job)
    if first.kind == "error":
        return _refused("chat_completions", first.error)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_stream_events(job, answer, first), media_type="text/event-stream", headers=headers)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    try:
        await _authorize(request)
        try:
            raw = await read_limited(request, MAX_BODY_BYTES)
        except HTTPException as exc:
            raise OpenAIError(413, str(exc.detail), code="request_too_large") from None
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise invalid_request(f"The request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise invalid_request("The request body is not valid JSON: nested too deeply") from None
        completion = parse_request(body)
        if completion.model not in model_ids(request.app):
            raise OpenAIError(404, f"The model '{completion.model}' does not exist; see GET /v1/models.",
                              code="model_not_found", param="model")
        worker_request = await asyncio.to_thread(to_worker_request, completion)
        if worker_request.voice is not None:
            reference = await resolve_voice(request.app, worker_request.voice)
            if reference:
                worker_request.frame["tts"]["ref_audio_data"] = reference
    except OpenAIError as exc:
        return _refused("chat_completions", exc)
    settings = getattr(request.app.state, "settings", None)
    job = CompletionJob(
        request.app.state.dispatcher,
        TaskType.streaming if completion.stream else TaskType.chat,
        worker_request.frame,
        timeout_s=settings.request_timeout if settings is not None else 300.0,
    )
    job.start()
    answer = Answer(completion)
    if completion.stream:
        return await _stream(request, job, answer)
    return await _complete(request, job, answer)
