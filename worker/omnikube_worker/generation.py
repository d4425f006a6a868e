"""Running one streamed reply: pieces out, metrics in, stop and client loss handled in one place."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np
from starlette.websockets import WebSocket

from omnikube.protocol import OUTPUT_SAMPLE_RATE, StreamChunk

from . import metrics
from .backend import Backend, GenerateOptions, Piece
from .media import encode_pcm
from .wsio import send_json


@dataclass
class Reply:
    text: str = ""
    tokens: int = 0
    audio: list[np.ndarray] = field(default_factory=list)
    stopped: bool = False
    elapsed_ms: float = 0.0
    pieces: int = 0  # how many pieces reached `on_piece`

    def joined_audio(self) -> np.ndarray | None:
        return np.concatenate(self.audio) if self.audio else None


async def stream_reply(backend: Backend, options: GenerateOptions, stop: threading.Event, session_type: str,
                       on_piece: Callable[[Piece, int], Awaitable[None]] | None = None,
                       started: float | None = None) -> Reply:
    """Generate a reply, calling `on_piece(piece, index)` for each piece; `started` anchors TTFT."""
    started = time.monotonic() if started is None else started
    reply = Reply()
    first_text = first_audio = True
    index = 0
    generator = backend.stream_generate(options, stop)
    try:
        async for piece in generator:
            now = time.monotonic()
            if piece.text and first_text:
                metrics.TIME_TO_FIRST_TOKEN.labels(session_type).observe(now - started)
                first_text = False
            if piece.audio is not None and piece.audio.size and first_audio:
                metrics.TIME_TO_FIRST_AUDIO.labels(session_type).observe(now - started)
                first_audio = False
            reply.text += piece.text
            reply.tokens += piece.tokens
            if piece.audio is not None and piece.audio.size:
                reply.audio.append(piece.audio)
                metrics.AUDIO_SECONDS.labels(session_type).inc(piece.audio.size / OUTPUT_SAMPLE_RATE)
            metrics.TOKENS.labels(session_type).inc(piece.tokens)
            if on_piece is not None:
                await on_piece(piece, index)
            index += 1
            reply.pieces = index
            if stop.is_set():
                break
    finally:
        aclose = getattr(generator, "aclose", None)
        if aclose is not None:
            await aclose()
    reply.stopped = stop.is_set()
    reply.elapsed_ms = (time.monotonic() - started) * 1000.0
    return reply


def chunk_frame(piece: Piece, index: int) -> dict:
    """The `chunk` frame of half duplex and legacy streaming (spec §4.2)."""
    has_audio = piece.audio is not None and piece.audio.size > 0
    return StreamChunk(chunk_index=index, text_delta=piece.text or None,
                       audio_data=encode_pcm(piece.audio) if has_audio else None).model_dump()


def send_chunks(ws: WebSocket) -> Callable[[Piece, int], Awaitable[None]]:
    """`on_piece` for half duplex and legacy streaming: each piece goes out as a `chunk` frame."""

    async def send(piece: Piece, index: int) -> None:
        await send_json(ws, chunk_frame(piece, index))

    return send


def final_chunk_frame(reply: Reply) -> dict:
    """The closing `chunk`, numbered after the pieces `send_chunks` sent."""
    return StreamChunk(chunk_index=reply.pieces, is_final=True, duration_ms=round(reply.elapsed_ms, 1)).model_dump()
