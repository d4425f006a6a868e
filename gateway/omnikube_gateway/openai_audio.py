"""Audio conversions for the client APIs, on top of the shared decoder (`omnikube.audio`).

The worker speaks raw little-endian float32 mono PCM: 16 kHz in, 24 kHz out. Client APIs speak
files and 16-bit PCM: OpenAI's `input_audio` is a WAV or MP3 file, its audio output is a WAV file
or raw 24 kHz pcm16, and Realtime reference voices may arrive as audio files. Everything here is CPU work on
bytes; callers on the event loop run the larger conversions through `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from omnikube.audio import AudioDecodeError, decode_audio, looks_like_audio_file
from omnikube.protocol import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE

from . import wav


class AudioFormatError(ValueError):
    """The bytes are not audio in a form we accept; the message says why, for the client."""


def b64decode_strict(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AudioFormatError(f"{what} is not valid base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_audio_file(data: bytes) -> bool:
    return looks_like_audio_file(data)


def wav_to_float32(data: bytes, target_rate: int = INPUT_SAMPLE_RATE, what: str = "audio") -> bytes:
    """An audio file (WAV, MP3, FLAC, OGG, M4A, ...; any rate and channels) as raw float32 mono PCM.

    Blocking (FFmpeg decodes it): callers on the event loop run it in a thread."""
    try:
        return decode_audio(data, rate=target_rate, what=what).astype("<f4").tobytes()
    except AudioDecodeError as exc:
        raise AudioFormatError(str(exc)) from None


def _samples(float32: bytes) -> np.ndarray:
    return np.frombuffer(float32[: len(float32) - len(float32) % 4], dtype="<f4")


def float32_to_pcm16(data: bytes) -> bytes:
    return (np.clip(_samples(data), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def float32_to_wav(data: bytes, rate: int = OUTPUT_SAMPLE_RATE) -> bytes:
    return wav.encode_pcm16(_samples(data), rate)
