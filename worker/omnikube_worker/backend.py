"""The one interface every model backend implements, and the plain data that crosses it.

The session handlers (chat, half duplex, duplex, legacy streaming) own the protocol: admission,
message order, pause and stop, errors. A backend only runs the model: it never sees a WebSocket or a
JSON frame. Two implementations: `simulated.SimulatedBackend` (no GPU) and `minicpmo.MiniCPMoBackend`.

Methods are coroutines; a backend that runs blocking GPU code moves it to a thread itself. Only one
session uses a backend at a time (the worker's admission guarantees it), so backends need no locks.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Union

import numpy as np

from omnikube.protocol import DuplexConfig


class Unsupported(Exception):
    """The loaded model cannot do what a request asks (for example audio out from a model directory
    that has only the Hugging Face style class). The message says what and why."""


@dataclass
class Audio:
    samples: np.ndarray                  # float32 mono 16 kHz


@dataclass
class Image:
    image: Any                           # PIL.Image.Image, RGB


@dataclass
class Video:
    data: bytes                          # the video file
    stack_frames: int = 1


Part = Union[str, Audio, Image, Video]


@dataclass
class Turn:
    role: str                            # "system" | "user" | "assistant"
    parts: list[Part]


@dataclass
class GenerateOptions:
    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 100
    seed: int | None = None
    length_penalty: float = 1.1
    generate_audio: bool = False
    voice: np.ndarray | None = None      # TTS reference voice, float32 16 kHz
    voice_path: str | None = None        # server-side reference WAV; neither given = worker default
    voice_prompt_max_ms: int | None = None  # the voice embedded in the auto system prompt, cut to this
    tts_mode: str = "audio_assistant"    # POST /chat's tts.mode ("default" ignores the voice)
    language: str = "en"                 # language of an auto-built voice system prompt
    max_slice_nums: int | None = None
    use_image_id: bool | None = None     # POST /chat's image.use_image_id (None: the model's default)
    tts_sampling: dict[str, float] | None = None  # POST /chat's tts.sampling, for the model's TTS sampler
    use_tts_template: bool = False
    omni_mode: bool = False
    enable_thinking: bool = False
    fault: str | None = None             # simulated backend only: a fault injected by the request


@dataclass
class Piece:
    """One streamed output chunk: text and the audio spoken for it (float32 24 kHz)."""

    text: str = ""
    audio: np.ndarray | None = None
    tokens: int = 0


@dataclass
class ChatResult:
    text: str
    audio: np.ndarray | None             # float32 24 kHz
    input_tokens: int
    generated_tokens: int
    prompt: str | None = None


@dataclass
class DuplexSetup:
    system_prompt: str
    ref_audio: np.ndarray | None = None      # LLM reference voice (embedded in the system prompt)
    tts_ref_audio: np.ndarray | None = None  # vocoder voice
    ref_audio_path: str | None = None
    config: DuplexConfig = field(default_factory=DuplexConfig)
    max_slice_nums: int = 1
    fault: str | None = None


@dataclass
class DuplexInput:
    audio: np.ndarray                        # float32 16 kHz, nominally 1 s
    frames: list[Any] = field(default_factory=list)   # RGB PIL images (omni)
    force_listen: bool = False
    max_slice_nums: int = 1
    fault: str | None = None


@dataclass
class DuplexOutput:
    is_listen: bool
    text: str = ""
    audio: np.ndarray | None = None          # float32 24 kHz
    end_of_turn: bool = False
    n_tokens: int | None = None
    n_tts_tokens: int | None = None
    vision_slices: int = 0
    costs_ms: dict[str, float] = field(default_factory=dict)   # cost_llm_ms, cost_tts_ms, ...


class Backend(ABC):
    """A loaded model serving every mode on the same weights."""

    name: str = "?"
    simulated: bool = False

    @abstractmethod
    def load(self) -> None:
        """Load the model. Blocking; the app calls it in a thread while /health says `loading`."""

    def default_voice(self) -> tuple[str, np.ndarray] | None:
        """(file name, 16 kHz mono float32) of the voice a reply gets when its request names none;
        None when the backend has no voice of its own."""
        return None

    @property
    @abstractmethod
    def kv_cache_length(self) -> int:
        """KV-cache tokens of the current mode (duplex decoder in duplex mode, else the LLM)."""

    # -- turn-based chat (stateless) --
    @abstractmethod
    async def chat(self, turns: list[Turn], options: GenerateOptions) -> ChatResult: ...

    # -- streaming turns on a KV cache that lives across calls (/ws/chat, half duplex, legacy) --
    @abstractmethod
    async def stream_reset(self) -> None:
        """Start a new streaming conversation: clear the LLM KV cache."""

    @abstractmethod
    async def stream_prefill(self, turns: list[Turn], options: GenerateOptions) -> int:
        """Append turns to the streaming conversation; returns the KV-cache length after."""

    @abstractmethod
    def stream_generate(self, options: GenerateOptions, stop: threading.Event) -> AsyncIterator[Piece]:
        """Generate the assistant's reply piece by piece; ends early once `stop` is set."""

    # -- full duplex --
    @abstractmethod
    async def duplex_prepare(self, setup: DuplexSetup) -> int:
        """Reset the duplex state and prefill the system prompt; returns the prompt's length."""

    @abstractmethod
    async def duplex_step(self, step: DuplexInput) -> DuplexOutput:
        """Prefill one input chunk and decode one step (listen or speak)."""

    @abstractmethod
    async def duplex_finalize(self) -> None:
        """Work deferred until after the step's result was sent (cache bookkeeping)."""

    @abstractmethod
    async def duplex_close(self) -> None:
        """End the duplex session and free its caches."""

    @abstractmethod
    async def clear_cache(self) -> None:
        """Drop the LLM KV cache (the vocoder's voice cache is kept)."""
