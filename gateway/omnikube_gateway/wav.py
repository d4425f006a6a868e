"""WAV reading and writing with numpy only (no audio stack in the gateway).

`decode` accepts RIFF/WAVE PCM (8/16/24/32-bit integer) and IEEE float (32/64-bit), mono or
stereo, including WAVE_FORMAT_EXTENSIBLE, and refuses anything else with a `WavError` whose
message says why. `encode_pcm16` writes the canonical 44-byte-header PCM16 file.
"""

from __future__ import annotations

import struct

import numpy as np


class WavError(ValueError):
    pass


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Float32 mono samples in [-1, 1] and the sample rate."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a WAV file (no RIFF/WAVE header)")
    fmt = None
    payload = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])[0]
        body = data[offset + 8:offset + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise WavError("fmt chunk too short")
            fmt = struct.unpack("<HHIIHH", body[:16]) + ((struct.unpack("<H", body[24:26])[0],) if len(body) >= 26 else (None,))
        elif chunk_id == b"data":
            payload = body
            break
        offset += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise WavError("WAV file lacks a fmt or data chunk")
    tag, channels, rate, _, block_align, bits, sub_tag = fmt
    if tag == 0xFFFE and sub_tag is not None:
        tag = sub_tag
    if channels < 1 or channels > 8 or rate <= 0 or block_align <= 0:
        raise WavError(f"invalid WAV format (channels={channels}, rate={rate})")
    usable = len(payload) - len(payload) % block_align
    raw = payload[:usable]
    if tag == 1 and bits == 8:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == 1 and bits == 16:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16))
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        samples = ints.astype(np.float32) / float(1 << 23)
    elif tag == 1 and bits == 32:
        samples = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    elif tag == 3 and bits == 32:
        samples = np.frombuffer(raw, "<f4").astype(np.float32)
    elif tag == 3 and bits == 64:
        samples = np.frombuffer(raw, "<f8").astype(np.float32)
    else:
        raise WavError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if not np.all(np.isfinite(samples)):
        raise WavError("WAV contains non-finite samples")
    return np.clip(samples, -1.0, 1.0).astype(np.float32), rate


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or samples.size == 0:
        return samples
    count = int(round(samples.size * target / rate))
    positions = np.linspace(0, samples.size - 1, count)
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


def encode_pcm16(samples: np.ndarray, rate: int) -> bytes:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm
