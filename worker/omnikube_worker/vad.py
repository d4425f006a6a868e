"""Voice activity detection for half duplex: Silero VAD, streaming, 16 kHz audio in, segments out.

The model is the ONNX Silero VAD shipped inside the `silero-vad` package (nothing is downloaded),
run with onnxruntime on one CPU thread. The package's own Python wrapper imports torch at import
time and keeps its state in torch tensors, so this module reads the package's `.onnx` file and
drives it with numpy (the same 512-sample windows with 64 samples of context and the recurrent
state the wrapper keeps): the worker never imports torch for VAD.

The knobs mean what they mean in Silero's `VADIterator` / `get_speech_timestamps`, which the
original's streaming VAD follows:
- `threshold`: a window whose speech probability is at least this starts (or continues) speech;
  speech only counts as paused once the probability drops below `threshold - 0.15`;
- `min_silence_duration_ms`: a pause that long ends the segment;
- `speech_pad_ms`: the segment is widened by this much on both sides;
- `min_speech_duration_ms`: a segment shorter than this (without the padding) is dropped
  (`discard`, the client sees `vad_state{speaking:false}` and no turn).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from omnikube.protocol import INPUT_SAMPLE_RATE, VadConfig

WINDOW = 512          # samples per model step at 16 kHz (32 ms)
CONTEXT = 64          # samples of the previous window the model sees again
NEGATIVE_MARGIN = 0.15
MODEL_FILE = "silero_vad.onnx"


class VadUnavailable(RuntimeError):
    """The Silero model cannot be loaded (package missing or broken); the message says which."""


@dataclass
class VadEvent:
    kind: str                              # "start" | "segment" | "discard"
    segment: np.ndarray | None = None      # the speech (with padding) for "segment"
    start: int = 0                         # stream sample where the (padded) speech begins
    end: int = 0                           # stream sample where it ends ("start": 0)


def model_path() -> Path:
    """The ONNX file inside the installed `silero-vad` package, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailable("the silero-vad package is not installed (pip install 'omnikube[worker]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / MODEL_FILE
    if not path.is_file():
        raise VadUnavailable(f"the silero-vad package lacks its model file {path}")
    return path


@lru_cache(maxsize=1)
def _session():
    """One onnxruntime session per process; `run` is thread-safe, the state lives per detector."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise VadUnavailable(f"onnxruntime is not installed ({exc})") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1   # a 32 ms window is far too small to gain from more threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(model_path()), sess_options=options, providers=["CPUExecutionProvider"])


def load_model() -> None:
    """Load the model now (blocking, once per process), so the first audio chunk does not pay for it."""
    _session()


class SileroVad:
    """One stream's detector. `feed` takes audio of any length; events come out as they happen."""

    def __init__(self, config: VadConfig | None = None) -> None:
        self.config = config or VadConfig()
        self._session = _session()
        self._sr = np.array(INPUT_SAMPLE_RATE, dtype=np.int64)
        self._pad = int(self.config.speech_pad_ms * INPUT_SAMPLE_RATE / 1000)
        self._min_silence = int(self.config.min_silence_duration_ms * INPUT_SAMPLE_RATE / 1000)
        self._min_speech = int(self.config.min_speech_duration_ms * INPUT_SAMPLE_RATE / 1000)
        self.reset()

    @property
    def in_speech(self) -> bool:
        return self._onset is not None

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._audio = np.zeros(0, dtype=np.float32)   # samples from `_audio_start` up to `_position`
        self._audio_start = 0
        self._position = 0                            # samples run through the model
        self._onset: int | None = None                # first speech window of the segment in progress
        self._quiet_since: int | None = None          # first window of the pause in progress

    def probability(self, window: np.ndarray) -> float:
        """Speech probability of the next 512-sample window (advances the model's state)."""
        frame = np.concatenate([self._context, window.reshape(1, WINDOW)], axis=1)
        out, self._state = self._session.run(None, {"input": frame, "state": self._state, "sr": self._sr})
        self._context = frame[:, -CONTEXT:]
        return float(out[0, 0])

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        self._pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        events: list[VadEvent] = []
        while self._pending.size >= WINDOW:
            window, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            self._audio = np.concatenate([self._audio, window])
            event = self._step(window)
            self._position += WINDOW
            if event is not None:
                events.append(event)
            if self._onset is None:   # keep only the pre-roll the padding can reach back into
                keep = self._pad + WINDOW
                if self._audio.size > keep:
                    self._audio_start += self._audio.size - keep
                    self._audio = self._audio[-keep:]
        return events

    def _step(self, window: np.ndarray) -> VadEvent | None:
        probability = self.probability(window)
        threshold = self.config.threshold
        start = self._position
        if probability >= threshold:
            self._quiet_since = None
            if self._onset is None:
                self._onset = start
                return VadEvent("start", start=max(0, start - self._pad))
            return None
        if self._onset is None or probability >= threshold - NEGATIVE_MARGIN:
            return None
        if self._quiet_since is None:
            self._quiet_since = start
        if start + WINDOW - self._quiet_since < max(self._min_silence, WINDOW):
            return None
        return self._end()

    def _end(self) -> VadEvent:
        onset, end = self._onset, self._quiet_since
        self._onset = self._quiet_since = None
        first = max(onset - self._pad, self._audio_start)
        last = min(end + self._pad, self._audio_start + self._audio.size)
        if end - onset < self._min_speech:
            return VadEvent("discard", start=first, end=last)
        return VadEvent("segment", self._audio[first - self._audio_start:last - self._audio_start].copy(), first, last)
