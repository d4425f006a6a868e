"""WAV files the gateway writes (OpenAI audio output, stored reference voices): 16-bit PCM.

Reading goes through the shared decoder, `omnikube.audio.decode_audio`, which takes any format."""

from __future__ import annotations

import numpy as np

from omnikube.audio import encode_wav


def encode_pcm16(samples: np.ndarray, rate: int) -> bytes:
    """Mono float32 samples -> the canonical 44-byte-header PCM16 WAV file."""
    return encode_wav(samples, rate)
