"""Audio conversions for the client APIs (plain numpy and the standard library's `wave`).

The worker speaks raw little-endian float32 mono PCM: 16 kHz in, 24 kHz out. Client APIs speak
files and 16-bit PCM: OpenAI's `input_audio` is a WAV file, its audio output is a WAV file or raw
24 kHz pcm16, and reference voices may arrive as WAV. Everything here is CPU work on bytes; callers
on the event loop run the larger conversions through `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import binascii
import io
import wave

import numpy as np

from omnikube.protocol import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE


class AudioFormatError(ValueError):
    """The bytes are not audio in a form we accept; the message says why, for the client."""


def b64decode_strict(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AudioFormatError(f"{what} is not valid base64") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_wav(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


def _resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Linear interpolation: good enough for speech going into the model's 16 kHz encoder."""
    if source_rate == target_rate or samples.size == 0:
        return samples
    duration = samples.size / source_rate
    target_size = max(1, int(round(duration * target_rate)))
    source_times = np.arange(samples.size, dtype=np.float64) / source_rate
    target_times = np.arange(target_size, dtype=np.float64) / target_rate
    return np.interp(target_times, source_times, samples).astype(np.float32)


def wav_to_float32(data: bytes, target_rate: int = INPUT_SAMPLE_RATE) -> bytes:
    """A PCM WAV file (8/16/24/32-bit, any rate, any channel count) as raw float32 mono PCM."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"not a PCM WAV file ({exc})") from None
    if width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16))
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        samples = np.frombuffer(frames, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioFormatError(f"unsupported WAV sample width: {width} bytes")
    if channels > 1:
        samples = samples[: samples.size - samples.size % channels].reshape(-1, channels).mean(axis=1)
    if samples.size == 0:
        raise AudioFormatError("the WAV file holds no samples")
    return _resample(samples.astype(np.float32), rate, target_rate).astype("<f4").tobytes()


def float32_to_pcm16(data: bytes) -> bytes:
    usable = len(data) - len(data) % 4
    samples = np.frombuffer(data[:usable], dtype="<f4")
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def pcm16_to_wav(pcm16: bytes, rate: int = OUTPUT_SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm16)
    return buffer.getvalue()
