"""`audio.voice` of a chat completion, resolved to the worker's reference audio.

A voice is one of:
- `default`, or one of OpenAI's stock voice names (`alloy`, `coral`, ...): the worker's default
  reference voice, so that applications written for OpenAI work unchanged;
- the name of a built-in reference WAV (`ref_minicpm_signature`, `ref_en_dlc_1`, ... in the
  directory of the configured `audio.ref_audio_path`);
- the id of an uploaded voice in the gateway's reference-audio registry (`/api/assets/ref_audio`).

The answer is base64 raw float32 16 kHz mono PCM (the worker's `tts.ref_audio_data`), or None for
the worker's default. Unknown voices are refused with the list of those that exist.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from .openai_audio import AudioFormatError, b64encode, wav_to_float32
from .openai_errors import OpenAIError, invalid_request

OPENAI_STOCK_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)
DEFAULT_VOICES = OPENAI_STOCK_VOICES | {"default"}
_BUILTIN_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def _builtin_dir(app: Any) -> Path | None:
    configured = app.state.settings.config.audio.ref_audio_path
    return Path(configured).parent if configured else None


def _builtin(app: Any, name: str) -> str | None:
    """Blocking: a built-in voice file by name, as base64 float32 16 kHz; None if there is none."""
    folder = _builtin_dir(app)
    stem = name.removesuffix(".wav")
    if folder is None or not _BUILTIN_NAME.match(stem):
        return None
    path = folder / f"{stem}.wav"
    if not path.is_file():
        return None
    try:
        return b64encode(wav_to_float32(path.read_bytes()))
    except (OSError, AudioFormatError) as exc:
        raise OpenAIError(500, f"Voice {name!r} could not be read: {exc}", type="server_error", code="voice_unreadable") from None


def _available(app: Any) -> list[str]:
    names = ["default"]
    folder = _builtin_dir(app)
    if folder is not None and folder.is_dir():
        names += sorted(p.stem for p in folder.glob("*.wav"))
    names += [entry["id"] for entry in app.state.ref_audio.entries()]
    return names


async def resolve_voice(app: Any, name: str) -> str | None:
    if name.lower() in DEFAULT_VOICES:
        return None
    voice = await app.state.ref_audio.audio_base64(name) or await asyncio.to_thread(_builtin, app, name)
    if voice is None:
        available = await asyncio.to_thread(_available, app)
        raise invalid_request(
            f"Unknown voice {name!r}. Available: {', '.join(available[:20])}; OpenAI's stock voice names use the default voice.",
            param="audio.voice", code="invalid_voice")
    return voice
