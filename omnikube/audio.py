"""Audio files in, model audio out: one decoder for the gateway and the worker.

`decode_audio` turns any audio file FFmpeg decodes (WAV, MP3, FLAC, OGG/Opus and Vorbis, M4A/AAC,
WebM, ...) into mono float32 samples at the rate asked for (16 kHz by default, the model's input),
through PyAV (FFmpeg's own libraries, shipped in the `av` wheel) and FFmpeg's swresample for the
channel mix and the rate change. It is bounded: the encoded size is checked before decoding and
the decoded duration while decoding, so a small file that expands to hours is refused early. Every
refusal is an `AudioDecodeError` whose message can go to the client as is.

Decoding is CPU work of tens of milliseconds: callers on an event loop run it in a thread. PyAV is
imported on first use, not with this module.
"""

from __future__ import annotations

import io
import wave

import numpy as np

INPUT_RATE = 16000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_SECONDS = 600.0

# Leading bytes of the containers people send; raw PCM (the protocol's own format) has none.
_SIGNATURES = (b"RIFF", b"ID3", b"fLaC", b"OggS", b"\x1aE\xdf\xa3", b"FORM", b"#!AMR", b"MThd", b"caff", b"wvpk")


class AudioDecodeError(ValueError):
    """Bytes that are not usable audio; the message says why."""


def has_container_signature(data: bytes) -> bool:
    """True for bytes that start with a container's magic (RIFF, ID3, fLaC, OggS, MP4 ftyp, ...)."""
    return data[:4] in _SIGNATURES or data[:3] in _SIGNATURES or data[4:8] == b"ftyp"


def looks_like_audio_file(data: bytes) -> bool:
    """A container's magic, or an MPEG audio / ADTS frame sync (11 set bits), which raw float32
    PCM can also start with by chance: callers that accept raw PCM too fall back to it then."""
    return has_container_signature(data) or (len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0)


def decode_audio(data: bytes, *, rate: int = INPUT_RATE, max_seconds: float = DEFAULT_MAX_SECONDS,
                 max_bytes: int = DEFAULT_MAX_BYTES, what: str = "audio") -> np.ndarray:
    """An encoded audio file -> mono float32 samples in [-1, 1] at `rate` Hz (blocking)."""
    if not data:
        raise AudioDecodeError(f"{what}: empty file")
    if len(data) > max_bytes:
        raise AudioDecodeError(f"{what}: {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    import av  # the FFmpeg libraries load here, only when audio is decoded

    limit = int(max_seconds * rate)
    pieces: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioDecodeError(f"{what}: the file holds no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    total = _append(pieces, out, total, limit, max_seconds, what)
            for out in resampler.resample(None):
                total = _append(pieces, out, total, limit, max_seconds, what)
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise AudioDecodeError(f"{what}: not a decodable audio file ({reason})") from None
    if not total:
        raise AudioDecodeError(f"{what}: the file decodes to no audio samples")
    samples = np.concatenate(pieces)
    if not np.all(np.isfinite(samples)):
        raise AudioDecodeError(f"{what}: the audio holds non-finite samples")
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


def _append(pieces: list[np.ndarray], frame, total: int, limit: int, max_seconds: float, what: str) -> int:
    samples = frame.to_ndarray().reshape(-1)
    total += samples.size
    if total > limit:
        raise AudioDecodeError(f"{what}: longer than the limit of {max_seconds:g} s")
    pieces.append(samples)
    return total


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """float32 samples (mono, or samples x channels) -> a 16-bit PCM WAV file (44-byte header)."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    """Mono float32 from `source` Hz to `target` Hz with FFmpeg's swresample (blocking)."""
    if source == target or samples.size == 0:
        return np.asarray(samples, dtype=np.float32)
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1),
                                       format="flt", layout="mono")
    frame.sample_rate = source
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)
