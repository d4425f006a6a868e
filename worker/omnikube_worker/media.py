"""Decoding and encoding of the protocol's media, with limits and clear errors.

Input audio is base64 raw float32 LE mono PCM at 16 kHz; an audio file (WAV, MP3, FLAC, OGG, M4A,
any rate or channel count) is accepted too and decoded by `omnikube.audio`. Output audio is base64 raw float32 at 24 kHz, except
`POST /chat`, which returns a 16-bit WAV file. Every failure raises `MediaError` with a message fit
to send to the client as is.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

from omnikube import audio as audio_file
from omnikube.audio import AudioDecodeError, decode_audio, has_container_signature, looks_like_audio_file
from omnikube.protocol import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE

MAX_AUDIO_S = 600.0            # one audio item / reference voice; 10 min of 16 kHz float32 = 38 MB
MAX_DUPLEX_CHUNK_S = 10.0      # one duplex / half-duplex audio_chunk
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MAX_FRAMES_PER_CHUNK = 8
# Float PCM lives in [-1, 1]; anything far outside is almost surely int16 or compressed bytes read
# as float32, which the model would hear as noise.
_MAX_ABS_SAMPLE = 16.0


class MediaError(ValueError):
    """Media the worker cannot use; the message says what was wrong."""


def b64decode(data: str, what: str) -> bytes:
    if not isinstance(data, str):
        raise MediaError(f"{what}: expected a base64 string")
    if data.startswith("data:"):  # tolerate data URLs: strip "data:...;base64,"
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"{what}: not valid base64 ({exc})") from exc


def decode_pcm16k(data: str, what: str = "audio", max_seconds: float = MAX_AUDIO_S) -> np.ndarray:
    """base64 float32 16 kHz mono PCM, or an audio file in any format FFmpeg decodes -> float32 array.

    Files (WAV, MP3, FLAC, OGG, M4A, ... recognised by their leading bytes) go through the shared
    decoder (`omnikube.audio`), which mixes to mono and resamples to 16 kHz; so a reference voice
    or a chat audio item may be whatever the user had. Blocking: callers run it off the event loop
    when it may be a file."""
    raw = b64decode(data, what)
    if looks_like_audio_file(raw):
        try:
            return decode_audio(raw, rate=INPUT_SAMPLE_RATE, max_seconds=max_seconds, what=what)
        except AudioDecodeError as exc:
            if has_container_signature(raw) or len(raw) % 4:  # surely meant as a file: say why it failed
                raise MediaError(str(exc)) from None
            # else: raw float32 PCM whose first bytes merely look like an MPEG sync word
    if len(raw) % 4:
        raise MediaError(f"{what}: {len(raw)} bytes is not a whole number of float32 samples; "
                         "expected raw float32 LE mono PCM at 16000 Hz or an audio file")
    samples = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if samples.size / INPUT_SAMPLE_RATE > max_seconds:
        raise MediaError(f"{what}: {samples.size / INPUT_SAMPLE_RATE:.1f} s of audio exceeds the limit of {max_seconds:g} s")
    if samples.size and (not np.all(np.isfinite(samples)) or float(np.max(np.abs(samples))) > _MAX_ABS_SAMPLE):
        raise MediaError(f"{what}: samples are not float PCM in [-1, 1]; expected raw float32 LE mono PCM "
                         "at 16000 Hz or an audio file (WAV, MP3, FLAC, OGG, M4A, ...)")
    return samples


def encode_pcm(samples: np.ndarray) -> str:
    """float32 array -> base64 raw float32 LE PCM (the streaming/duplex output format)."""
    return base64.b64encode(np.asarray(samples, dtype="<f4").tobytes()).decode("ascii")


def encode_wav(samples: np.ndarray, sample_rate: int = OUTPUT_SAMPLE_RATE) -> bytes:
    """float32 array (samples, or samples x channels) -> 16-bit PCM WAV file bytes.

    Mono 24 kHz is the `POST /chat` output format; recordings also write 16 kHz and stereo."""
    return audio_file.encode_wav(samples, sample_rate)


def decode_image(data: str, what: str = "image"):
    """base64 image file -> RGB PIL image. Imports Pillow lazily: only sessions with images need it."""
    from PIL import Image, UnidentifiedImageError

    raw = b64decode(data, what)
    if len(raw) > MAX_IMAGE_BYTES:
        raise MediaError(f"{what}: {len(raw)} bytes exceeds the limit of {MAX_IMAGE_BYTES} bytes")
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            width, height = probe.size
            if width * height > MAX_IMAGE_PIXELS:
                raise MediaError(f"{what}: {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS}")
            probe.load()
            return probe.convert("RGB")
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{what}: not a decodable image file ({exc.__class__.__name__}: {exc})") from exc


def decode_video(data: str, what: str = "video") -> bytes:
    """A video stays bytes here; the backend extracts frames (and says so when it cannot)."""
    raw = b64decode(data, what)
    if not raw:
        raise MediaError(f"{what}: empty")
    return raw


def seconds(samples: np.ndarray | None, sample_rate: int) -> float:
    return 0.0 if samples is None else samples.size / sample_rate
