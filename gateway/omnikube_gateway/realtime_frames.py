"""The MiniCPM-o Realtime protocol's frames, translated to and from a worker's `/ws/duplex`.

Duties:
- parse client frames of both generations (the demo's `session.update` /
  `input_audio_buffer.append`, the SDK's `session.init` / `input.append`, and `session.close`)
  into three plain shapes, validating every field before anything reaches a worker (a worker ends
  a session silently on an invalid config);
- build the worker's `prepare` and `audio_chunk` frames from them;
- turn each worker `result` into the events both the browser client and the `openbmb-realtime`
  SDK read, and keep the session's cumulative token usage.

No I/O here: `realtime.py` owns the sockets.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .openai_audio import AudioFormatError, b64decode_strict, b64encode, is_audio_file, wav_to_float32

DEFAULT_INSTRUCTIONS = "You are a helpful assistant."
MAX_VIDEO_FRAMES = 4
MAX_AUDIO_SECONDS = 30
_FLOAT32_BYTES_PER_SECOND = 16_000 * 4
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class BadFrame(Exception):
    """A client frame we cannot accept; `code` and `message` go into the `error` event."""

    def __init__(self, code: str, message: str, *, close_code: int = 1008) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


# ---- client frames, as they arrive -------------------------------------------------------------

class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Gen1Voice(_Lenient):
    length_penalty: float | None = Field(None, ge=0.1, le=5)


class _Gen1Session(_Lenient):
    instructions: str | None = None
    ref_audio: str | None = None
    tts_ref_audio: str | None = None
    max_slice_nums: int | None = Field(None, ge=1, le=9)
    voice_config: _Gen1Voice | None = None


class _Gen2Config(_Lenient):
    length_penalty: float | None = Field(None, ge=0.1, le=5)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    max_kv_tokens: int | None = Field(None, ge=1)
    tts_enabled: bool | None = None
    vision_hd: bool | None = None


class _Gen2Voice(_Lenient):
    ref_audio_base64: str | None = None
    tts_ref_audio_base64: str | None = None


class _Gen2Payload(_Lenient):
    system_prompt: str | None = None
    config: _Gen2Config | None = None
    voice: _Gen2Voice | None = None
    max_slice_nums: int | None = Field(None, ge=1, le=9)


class _Append(_Lenient):
    audio: str
    video_frames: list[str] | None = None
    force_listen: bool = False
    max_slice_nums: int | None = Field(None, ge=1, le=9)


# ---- client frames, normalised -----------------------------------------------------------------

@dataclass
class SessionInit:
    """The init frame of either generation. `sdk` is true for the SDK's `session.init`."""

    sdk: bool
    system_prompt: str = DEFAULT_INSTRUCTIONS
    ref_audio_base64: str | None = None
    tts_ref_audio_base64: str | None = None
    max_slice_nums: int = 1
    config: dict[str, float] = field(default_factory=dict)
    max_kv_tokens: int | None = None
    max_turn_tokens: int | None = None
    tts_enabled: bool = True


@dataclass
class InputChunk:
    audio_base64: str
    video_frames: list[str] = field(default_factory=list)
    force_listen: bool = False
    max_slice_nums: int | None = None


@dataclass
class CloseRequest:
    reason: str = "user_stop"


@dataclass
class Ignored:
    """A well-formed frame of a type this server does not act on (logged, dropped)."""

    type: str


ClientFrame = Union[SessionInit, InputChunk, CloseRequest, Ignored]

INIT_TYPES = ("session.update", "session.init")
APPEND_TYPES = ("input_audio_buffer.append", "input.append")


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "frame"
    return f"{where}: {first.get('msg', 'invalid value')}"


def _reference_audio(value: str | None, what: str) -> str | None:
    """Reference voices are raw float32 16 kHz PCM; an audio file (WAV, MP3, ...) is converted."""
    if not value:
        return None
    try:
        raw = b64decode_strict(value, what)
        if is_audio_file(raw):
            try:
                return b64encode(wav_to_float32(raw, what=what))
            except AudioFormatError:
                if len(raw) % 4 or raw[:1] != b"\xff":
                    raise  # else raw float32 PCM whose first bytes look like an MPEG sync word
    except AudioFormatError as exc:
        raise BadFrame("invalid_payload", str(exc)) from None
    if len(raw) % 4:
        raise BadFrame("invalid_payload", f"{what} must be raw float32 PCM (length not a multiple of 4)")
    return value


def _check_audio(value: str, what: str) -> None:
    try:
        raw = b64decode_strict(value, what)
    except AudioFormatError as exc:
        raise BadFrame("invalid_payload", str(exc)) from None
    if not raw:
        raise BadFrame("missing_field", f"{what} is empty")
    if len(raw) % 4:
        raise BadFrame("invalid_payload", f"{what} must be raw float32 PCM, 16 kHz mono (length not a multiple of 4)")
    if len(raw) > MAX_AUDIO_SECONDS * _FLOAT32_BYTES_PER_SECOND:
        raise BadFrame("invalid_payload", f"{what} is longer than {MAX_AUDIO_SECONDS} s; send about 1 s per append")


def _check_frames(frames: list[str]) -> None:
    if len(frames) > MAX_VIDEO_FRAMES:
        raise BadFrame("invalid_payload", f"at most {MAX_VIDEO_FRAMES} video_frames per append")
    for index, frame in enumerate(frames):
        try:
            raw = b64decode_strict(frame, f"video_frames[{index}]")
        except AudioFormatError as exc:
            raise BadFrame("invalid_payload", str(exc)) from None
        if not raw.startswith(_IMAGE_MAGIC):
            raise BadFrame("invalid_payload", f"video_frames[{index}] is not a JPEG or PNG image")


def _parse_gen1_init(frame: dict[str, Any]) -> SessionInit:
    session = _Gen1Session.model_validate(frame.get("session") or {})
    config = {}
    if session.voice_config and session.voice_config.length_penalty is not None:
        config["length_penalty"] = session.voice_config.length_penalty
    return SessionInit(
        sdk=False,
        system_prompt=session.instructions or DEFAULT_INSTRUCTIONS,
        ref_audio_base64=_reference_audio(session.ref_audio, "session.ref_audio"),
        tts_ref_audio_base64=_reference_audio(session.tts_ref_audio, "session.tts_ref_audio"),
        max_slice_nums=session.max_slice_nums or 1,
        config=config,
    )


def _parse_gen2_init(frame: dict[str, Any]) -> SessionInit:
    payload = _Gen2Payload.model_validate(frame.get("payload") or {})
    options = payload.config or _Gen2Config()
    voice = payload.voice or _Gen2Voice()
    config = {
        key: value
        for key, value in (("length_penalty", options.length_penalty), ("temperature", options.temperature))
        if value is not None
    }
    slices = payload.max_slice_nums or (4 if options.vision_hd else 1)
    return SessionInit(
        sdk=True,
        system_prompt=payload.system_prompt or DEFAULT_INSTRUCTIONS,
        ref_audio_base64=_reference_audio(voice.ref_audio_base64, "payload.voice.ref_audio_base64"),
        tts_ref_audio_base64=_reference_audio(voice.tts_ref_audio_base64, "payload.voice.tts_ref_audio_base64"),
        max_slice_nums=slices,
        config=config,
        max_kv_tokens=options.max_kv_tokens,
        max_turn_tokens=options.max_tokens,
        tts_enabled=options.tts_enabled is not False,
    )


def _parse_append(fields: dict[str, Any], *, video: bool) -> InputChunk:
    append = _Append.model_validate(fields)
    _check_audio(append.audio, "audio")
    frames = append.video_frames or []
    if frames and not video:
        raise BadFrame("invalid_payload", "video_frames are only accepted with mode=video")
    _check_frames(frames)
    return InputChunk(append.audio, frames, append.force_listen, append.max_slice_nums)


def parse_client_frame(message: str | bytes, *, video: bool) -> ClientFrame:
    """One client frame, either generation. Raises `BadFrame` for anything we must refuse."""
    if isinstance(message, bytes):
        raise BadFrame("invalid_json", "binary frames are not part of the protocol; send JSON text", close_code=1003)
    try:
        frame = json.loads(message)
    except json.JSONDecodeError as exc:
        raise BadFrame("invalid_json", f"frame is not valid JSON: {exc.msg}", close_code=1003) from None
    except RecursionError:  # the client's mistake like any other bad frame, not an internal error
        raise BadFrame("invalid_json", "frame is not valid JSON: nested too deeply", close_code=1003) from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise BadFrame("invalid_payload", "a frame must be a JSON object with a string `type`")
    kind = frame["type"]
    try:
        if kind == "session.update":
            return _parse_gen1_init(frame)
        if kind == "session.init":
            return _parse_gen2_init(frame)
        if kind == "input_audio_buffer.append":
            return _parse_append(frame, video=video)
        if kind == "input.append":
            if not isinstance(frame.get("input"), dict):
                raise BadFrame("missing_field", "input.append needs an `input` object")
            return _parse_append(frame["input"], video=video)
    except ValidationError as exc:
        code = "missing_field" if exc.errors()[0].get("type") == "missing" else "invalid_payload"
        raise BadFrame(code, f"{kind}: {_validation_message(exc)}") from None
    if kind == "session.close":
        reason = frame.get("reason")
        return CloseRequest(reason if isinstance(reason, str) and _REASON.match(reason) else "user_stop")
    return Ignored(kind)


# ---- worker frames -----------------------------------------------------------------------------

def prepare_frame(init: SessionInit) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "prepare",
        "system_prompt": init.system_prompt,
        "deferred_finalize": True,
        "max_slice_nums": init.max_slice_nums,
    }
    if init.ref_audio_base64:
        frame["ref_audio_base64"] = init.ref_audio_base64
    if init.tts_ref_audio_base64:
        frame["tts_ref_audio_base64"] = init.tts_ref_audio_base64
    if init.config:
        frame["config"] = dict(init.config)
    return frame


def audio_chunk_frame(chunk: InputChunk, *, force_listen: bool) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "audio_chunk", "audio_base64": chunk.audio_base64}
    if force_listen:
        frame["force_listen"] = True
    if chunk.video_frames:
        frame["frame_base64_list"] = chunk.video_frames
    if chunk.max_slice_nums is not None:
        frame["max_slice_nums"] = chunk.max_slice_nums
    return frame


# ---- server events -----------------------------------------------------------------------------

def error_event(code: str, message: str, *, client_fault: bool = False) -> dict[str, Any]:
    kind = "client_error" if client_fault else "server_error"
    return {"type": "error", "error": {"code": code, "message": message, "type": kind}}


@dataclass
class Usage:
    """Cumulative session usage from the worker's own counts.

    `total` is the duplex KV cache length (system prompt, every input chunk and every token the
    model produced); `output` sums the LLM tokens of speaking steps; the difference is input.
    """

    output_tokens: int = 0
    tts_tokens: int = 0
    vision_tokens: int = 0
    kv_cache_length: int = 0

    def add(self, result: dict[str, Any]) -> None:
        self.output_tokens += _count(result.get("n_tokens"))
        self.tts_tokens += _count(result.get("n_tts_tokens"))
        self.vision_tokens += _count(result.get("vision_tokens"))
        self.kv_cache_length = max(self.kv_cache_length, _count(result.get("kv_cache_length")))

    def as_event_field(self) -> dict[str, Any]:
        total = max(self.kv_cache_length, self.output_tokens)
        return {
            "input_tokens": total - self.output_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": total,
            "input_tokens_details": {"vision_tokens": self.vision_tokens},
            "output_tokens_details": {"audio_tokens": self.tts_tokens},
        }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass
class OutputMapper:
    """Worker `result` frames to Realtime events, for the client generation that opened the session.

    Browser (generation 1) clients get one `response.listen` per listening step, as the demo does;
    they drive playback and the KV display from it. SDK clients turn every `response.listen` into a
    `TurnCompleted`, so they get one only when the model stops speaking.
    """

    sdk: bool
    tts_enabled: bool = True
    usage: Usage = field(default_factory=Usage)
    speaking: bool = False
    turn_tokens: int = 0

    def events(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        self.usage.add(result)
        kv = _count(result.get("kv_cache_length"))
        if result.get("is_listen", True):
            was_speaking, self.speaking, self.turn_tokens = self.speaking, False, 0
            if self.sdk and not was_speaking:
                return []
            return [{"type": "response.listen", "kv_cache_length": kv}]
        self.speaking = True
        self.turn_tokens += _count(result.get("n_tokens"))
        text = result.get("text") or ""
        end = bool(result.get("end_of_turn"))
        audio = result.get("audio_data") if self.tts_enabled else None
        events: list[dict[str, Any]] = [
            {"type": "response.output_audio.delta", "text": text, "audio": audio or None, "end_of_turn": end, "kv_cache_length": kv}
        ]
        if text or end:
            events.append({"type": "response.output_text.delta", "text": text, "delta": text, "end_of_turn": end})
        if end:
            self.speaking, self.turn_tokens = False, 0
            events.append({"type": "response.done", "response": {"status": "completed"}, "usage": self.usage.as_event_field()})
        return events

    def closed_event(self, reason: str) -> dict[str, Any]:
        return {"type": "session.closed", "reason": reason, "usage": self.usage.as_event_field()}
