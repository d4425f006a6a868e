"""OpenAI chat-completion requests, validated and translated into one worker `/ws/chat` request.

What the worker accepts and what OpenAI clients send differ in three places, handled here:
- content parts: `text`; `image_url` with a `data:` URL (pods have no internet, so remote URLs are
  refused with a clear error); `input_audio` WAV or MP3, decoded to raw float32 16 kHz mono PCM;
- roles: `developer` is a system message; tool and function messages are refused;
- sampling: `max_completion_tokens` / `max_tokens`, `temperature`, `top_p`, `seed` are passed in
  the worker's `generation` block; `stop` is applied by the gateway on the text it relays.

Pure functions: the caller runs `to_worker_request` in a thread (it decodes base64 and audio).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .openai_audio import AudioFormatError, b64decode_strict, b64encode, wav_to_float32
from .openai_errors import invalid_request

DEFAULT_MAX_TOKENS = 512
MAX_TOKENS_LIMIT = 4096
AUDIO_FORMATS = ("wav", "pcm16")
INPUT_AUDIO_FORMATS = ("wav", "mp3")  # OpenAI's own list; any file FFmpeg decodes is accepted
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.DOTALL)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AudioOutput(_Lenient):
    voice: str | dict[str, Any] = "default"
    format: str = "wav"


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    tools: list[Any] | None = None

    @property
    def wants_audio(self) -> bool:
        return "audio" in (self.modalities or [])

    @property
    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]


def parse_request(body: Any) -> ChatCompletionRequest:
    """Validate the body; every refusal names the offending parameter, as OpenAI does."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise invalid_request(f"Invalid value for '{param}': {first.get('msg')}", param=param,
                              code="missing_required_parameter" if first.get("type") == "missing" else "invalid_value") from None
    if (request.n or 1) != 1:
        raise invalid_request("Only n=1 is supported.", param="n")
    if request.tools:
        raise invalid_request("Tool calling is not supported by this model server.", param="tools")
    if request.token_limit > MAX_TOKENS_LIMIT:
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        raise invalid_request(f"{param} must be at most {MAX_TOKENS_LIMIT}.", param=param)
    if isinstance(request.stop, list) and len(request.stop) > 4:
        raise invalid_request("At most 4 stop sequences are allowed.", param="stop")
    if request.wants_audio:
        if request.audio is None:
            raise invalid_request("The 'audio' parameter (voice and format) is required with modalities ['text', 'audio'].", param="audio")
        if request.audio.format not in AUDIO_FORMATS:
            raise invalid_request(f"Unsupported audio format {request.audio.format!r}; use one of {', '.join(AUDIO_FORMATS)}.",
                                  param="audio.format")
        if request.stream and request.audio.format != "pcm16":
            raise invalid_request("Streamed audio output must use audio.format 'pcm16'.", param="audio.format")
    return request


@dataclass
class WorkerRequest:
    frame: dict[str, Any]  # the one `/ws/chat` request frame
    voice: str | None      # the voice name to resolve into `tts.ref_audio_data`, if audio is wanted


def _image_item(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise invalid_request("image_url parts need image_url.url.", param=f"{where}.image_url.url")
    if not url.startswith("data:"):
        raise invalid_request(
            "Only data: URLs are accepted for images (base64, e.g. data:image/jpeg;base64,...); "
            "the server does not fetch remote URLs.",
            param=f"{where}.image_url.url", code="invalid_image_url",
        )
    match = _DATA_URL.match(url)
    if not match or not (match.group("mime") or "").startswith("image/"):
        raise invalid_request("The image data URL must look like data:image/<type>;base64,<data>.",
                              param=f"{where}.image_url.url", code="invalid_image_url")
    data = match.group("data")
    try:
        if not b64decode_strict(data, "image"):
            raise AudioFormatError("empty")
    except AudioFormatError:
        raise invalid_request("The image data URL does not hold valid base64 data.",
                              param=f"{where}.image_url.url", code="invalid_image_url") from None
    return {"type": "image", "data": data}


def _audio_item(part: dict[str, Any], where: str) -> dict[str, Any]:
    audio = part.get("input_audio")
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str) or not audio["data"]:
        raise invalid_request("input_audio parts need input_audio.data (base64 WAV or MP3).", param=f"{where}.input_audio.data")
    audio_format = audio.get("format", "wav")
    if audio_format not in INPUT_AUDIO_FORMATS:
        raise invalid_request(f"Unsupported input_audio format {audio_format!r}; send a WAV or MP3 file.",
                              param=f"{where}.input_audio.format")
    try:
        pcm = wav_to_float32(b64decode_strict(audio["data"], "input_audio.data"))
    except AudioFormatError as exc:
        raise invalid_request(f"input_audio: {exc}.", param=f"{where}.input_audio.data", code="invalid_audio") from None
    return {"type": "audio", "data": b64encode(pcm), "sample_rate": 16000}


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise invalid_request("content must be a string or a non-empty array of content parts.", param=f"{where}.content")
    items: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise invalid_request(f"{kind} parts need a string '{kind}'.", param=f"{at}.{kind}")
            items.append({"type": "text", "text": text})
        elif kind == "image_url":
            items.append(_image_item(part, at))
        elif kind == "input_audio":
            items.append(_audio_item(part, at))
        else:
            raise invalid_request(f"Unsupported content part type {kind!r}; use text, image_url or input_audio.", param=f"{at}.type")
    return items


def _message(message: Any, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid_request("Each message must be an object.", param=where)
    role = message.get("role")
    if role == "developer":
        role = "system"
    if role not in ("system", "user", "assistant"):
        raise invalid_request(f"Unsupported role {role!r}; use system, developer, user or assistant.", param=f"{where}.role")
    content = message.get("content")
    if content is None and role == "assistant":
        raise invalid_request(
            "Assistant messages need their text in content; earlier audio replies are not stored, "
            "so send the reply's transcript as content.", param=f"{where}.content")
    return {"role": role, "content": _content(content, where)}


def _voice_name(request: ChatCompletionRequest) -> str | None:
    if not request.wants_audio or request.audio is None:
        return None
    voice = request.audio.voice
    name = voice.get("id") if isinstance(voice, dict) else voice
    if not isinstance(name, str) or not name:
        raise invalid_request("audio.voice must be a voice name or id.", param="audio.voice")
    return name


def to_worker_request(request: ChatCompletionRequest) -> WorkerRequest:
    generation: dict[str, Any] = {"max_new_tokens": request.token_limit}
    for key in ("temperature", "top_p", "seed"):
        value = getattr(request, key)
        if value is not None:
            generation[key] = value
    frame: dict[str, Any] = {
        "messages": [_message(m, i) for i, m in enumerate(request.messages)],
        "streaming": True,
        "generation": generation,
        "tts": {"enabled": request.wants_audio},
    }
    return WorkerRequest(frame, _voice_name(request))


