"""A tiny deterministic formant synthesizer: text -> speech-like float32 audio at 24 kHz.

The simulated backend speaks with it, so every audio path (encoding, chunking, playback, recording)
carries real, audible sound with the shape of speech (voiced syllables, pitch movement, pauses),
not silence. Vowels come from the letters of each word; the same text always gives the same samples.
"""

from __future__ import annotations

import zlib

import numpy as np

from omnikube.protocol import OUTPUT_SAMPLE_RATE

# (F1, F2, F3) in Hz for the vowel each letter suggests.
_FORMANTS = {
    "a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
    "o": (570, 840, 2410), "u": (300, 870, 2240), "y": (270, 2290, 3010),
}
_DEFAULT_FORMANTS = (500, 1500, 2500)
_GAP_S = 0.05
_FADE_S = 0.015
_PEAK = 0.3


def speak(text: str, duration_s: float | None = None, rate: int = OUTPUT_SAMPLE_RATE) -> np.ndarray:
    """Synthesize `text`; with `duration_s` the words are fitted into exactly that much audio."""
    words = text.split()
    if not words:
        return np.zeros(int(round((duration_s or 0.0) * rate)), dtype=np.float32)
    if duration_s is None:
        lengths = [min(0.45, max(0.15, 0.1 + 0.05 * len(w))) for w in words]
    else:
        lengths = [max(0.02, duration_s / len(words) - _GAP_S)] * len(words)
    pieces = []
    for index, (word, length) in enumerate(zip(words, lengths)):
        pieces.append(_syllable(word, length, rate, declination=1.0 - 0.15 * index / len(words)))
        pieces.append(np.zeros(int(_GAP_S * rate), dtype=np.float32))
    audio = np.concatenate(pieces)
    if duration_s is not None:
        target = int(round(duration_s * rate))
        audio = np.pad(audio, (0, max(0, target - audio.size)))[:target]
    return audio.astype(np.float32)


def _syllable(word: str, length_s: float, rate: int, declination: float) -> np.ndarray:
    seed = zlib.crc32(word.lower().encode("utf-8"))
    vowel = next((c for c in word.lower() if c in _FORMANTS), None)
    formants = _FORMANTS.get(vowel, _DEFAULT_FORMANTS) if vowel else _DEFAULT_FORMANTS
    f0 = (110 + seed % 80) * declination
    t = np.arange(int(length_s * rate), dtype=np.float64) / rate
    # A gentle pitch glide makes it sound like intonation rather than a test tone.
    pitch = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 3.0 * t + (seed % 7)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    harmonics = np.arange(1, int(4000 // f0) + 1)
    gains = sum(1.0 / (1.0 + ((harmonics * f0 - f) / 90.0) ** 2) for f in formants) / harmonics ** 0.5
    signal = (gains[:, None] * np.sin(harmonics[:, None] * phase[None, :])).sum(axis=0)
    fade = min(int(_FADE_S * rate), t.size // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[-fade:] *= ramp[::-1]
    peak = float(np.max(np.abs(signal))) or 1.0
    return (signal / peak * _PEAK).astype(np.float32)
