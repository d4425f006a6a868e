"""Voice activity detection for half duplex: 16 kHz audio in, speech segments out.

An energy detector over 1024-sample windows (64 ms, Silero's window), shaped by the same knobs
as the original's Silero VAD (`threshold`, `min_speech_duration_ms`, `min_silence_duration_ms`,
`speech_pad_ms`). `threshold` maps onto window loudness: probability = RMS / 0.05, capped at 1, so
the default 0.7 means RMS 0.035 (normal speech at a close microphone is 0.05 to 0.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnikube.protocol import INPUT_SAMPLE_RATE, VadConfig

WINDOW = 1024
_FULL_SCALE_RMS = 0.05


@dataclass
class VadEvent:
    kind: str                              # "start" | "segment" | "discard"
    segment: np.ndarray | None = None      # the speech (with padding) for "segment"


class EnergyVad:
    def __init__(self, config: VadConfig | None = None) -> None:
        self.config = config or VadConfig()
        self._pending = np.zeros(0, dtype=np.float32)
        self._speech: list[np.ndarray] = []
        self._pre_roll = np.zeros(0, dtype=np.float32)
        self._silence = 0
        self._in_speech = False

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def reset(self) -> None:
        self.__init__(self.config)  # type: ignore[misc]

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])
        events: list[VadEvent] = []
        while self._pending.size >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            event = self._window(window)
            if event is not None:
                events.append(event)
        return events

    def _window(self, window: np.ndarray) -> VadEvent | None:
        cfg = self.config
        probability = min(1.0, float(np.sqrt(np.mean(window ** 2))) / _FULL_SCALE_RMS)
        pad = int(cfg.speech_pad_ms * INPUT_SAMPLE_RATE / 1000)
        if probability >= cfg.threshold:
            started = not self._in_speech
            if started:
                self._in_speech = True
                self._speech = [self._pre_roll[-pad:] if pad else np.zeros(0, dtype=np.float32)]
            self._speech.append(window)
            self._silence = 0
            return VadEvent("start") if started else None
        self._pre_roll = np.concatenate([self._pre_roll, window])[-max(pad, 1):]
        if not self._in_speech:
            return None
        self._speech.append(window)
        self._silence += WINDOW
        if self._silence * 1000 < cfg.min_silence_duration_ms * INPUT_SAMPLE_RATE:
            return None
        audio = np.concatenate(self._speech)
        speech = audio[: audio.size - self._silence + pad]
        self._in_speech, self._speech, self._silence = False, [], 0
        if (speech.size - 2 * pad) * 1000 < cfg.min_speech_duration_ms * INPUT_SAMPLE_RATE:
            return VadEvent("discard")
        return VadEvent("segment", speech)
