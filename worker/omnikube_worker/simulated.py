"""The simulated backend: the whole protocol without a GPU or weights.

Deterministic text that says it is simulated, real speech-shaped audio (see `synth.py`),
configurable timings (`SimOptions`) and fault injection (`faults.py`). Its duplex turn-taking
follows the input's energy: it listens while the user speaks and answers once the user falls
silent, like the real model does from the user's point of view. It keeps KV-cache lengths the same
way the real model would grow them, so `/health` and results report plausible numbers.
"""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator

import numpy as np

from omnikube.protocol import INPUT_SAMPLE_RATE, DuplexConfig

from .backend import (Audio, Backend, ChatResult, DuplexInput, DuplexOutput, DuplexSetup,
                      GenerateOptions, Image, Piece, Turn, Video)
from .faults import FaultPlan, Faults
from .settings import SimOptions
from .synth import speak

SIM_TAG = "[simulated]"
_SPEECH_RMS = 0.01          # input chunks louder than this count as the user speaking
_MIN_HEARD_S = 0.3          # speech needed before the simulated model answers
_AUDIO_TOKENS_PER_S = 25
_VISION_TOKENS_PER_SLICE = 64
_WORDS_PER_DUPLEX_STEP = 3


class SimulatedBackend(Backend):
    name = "simulated"
    simulated = True

    def __init__(self, options: SimOptions | None = None, faults: Faults | None = None) -> None:
        self.options = options or SimOptions()
        self.faults = faults or Faults(FaultPlan.parse(self.options.fault))
        self._stream_kv = 0
        self._last_user: Turn | None = None
        self._duplex = _DuplexState()
        self._duplex_config = DuplexConfig()
        self._mode = "chat"

    # -- loading ------------------------------------------------------------------------------
    def load(self) -> None:
        if self.faults.plan.load_error:
            raise RuntimeError("simulated model load failure (fault injection)")
        threading.Event().wait(self._seconds(self.options.load_s * 1000))

    @property
    def kv_cache_length(self) -> int:
        return self._duplex.kv if self._mode == "duplex" else self._stream_kv

    # -- chat -----------------------------------------------------------------------------------
    async def chat(self, turns: list[Turn], options: GenerateOptions) -> ChatResult:
        self._mode = "chat"
        input_tokens = sum(_turn_tokens(t) for t in turns)
        await self._sleep_ms(self.options.prefill_ms)
        words = compose_reply(_last_user(turns)).split()[: options.max_new_tokens]
        await self._sleep_tokens(len(words))
        await self.faults.before_chunk(options.fault)
        text = " ".join(words)
        audio = await asyncio.to_thread(speak, text) if options.generate_audio else None
        return ChatResult(text=text, audio=audio, input_tokens=input_tokens, generated_tokens=len(words))

    # -- streaming --------------------------------------------------------------------------------
    async def stream_reset(self) -> None:
        self._mode = "chat"
        self._stream_kv = 0
        self._last_user = None

    async def stream_prefill(self, turns: list[Turn], options: GenerateOptions) -> int:
        self._mode = "chat"
        await self._sleep_ms(self.options.prefill_ms)
        self._stream_kv += sum(_turn_tokens(t) for t in turns)
        self._last_user = _last_user(turns) or self._last_user
        return self._stream_kv

    async def stream_generate(self, options: GenerateOptions, stop: threading.Event) -> AsyncIterator[Piece]:
        words = compose_reply(self._last_user).split()[: options.max_new_tokens]
        per_chunk = max(1, self.options.words_per_chunk)
        for start in range(0, len(words), per_chunk):
            if stop.is_set():
                return
            chunk = words[start:start + per_chunk]
            await self._sleep_tokens(len(chunk))
            if stop.is_set():
                return
            await self.faults.before_chunk(options.fault)
            text = " ".join(chunk) + (" " if start + per_chunk < len(words) else "")
            audio = await asyncio.to_thread(speak, text) if options.generate_audio else None
            self._stream_kv += len(chunk)
            yield Piece(text=text, audio=audio, tokens=len(chunk))

    # -- duplex ------------------------------------------------------------------------------------
    async def duplex_prepare(self, setup: DuplexSetup) -> int:
        self._mode = "duplex"
        self._duplex_config = setup.config
        prompt = render_duplex_prompt(setup.system_prompt)
        await self._sleep_ms(self.options.prefill_ms)
        ref_s = 0.0 if setup.ref_audio is None else setup.ref_audio.size / INPUT_SAMPLE_RATE
        self._duplex = _DuplexState(kv=len(prompt.split()) + int(ref_s * _AUDIO_TOKENS_PER_S) + 8)
        return len(prompt)

    async def duplex_step(self, step: DuplexInput) -> DuplexOutput:
        state, config = self._duplex, self._duplex_config
        await self._sleep_ms(self.options.duplex_step_ms)
        state.step += 1
        chunk_s = step.audio.size / INPUT_SAMPLE_RATE
        slices = len(step.frames) * step.max_slice_nums
        state.kv += int(round(chunk_s * _AUDIO_TOKENS_PER_S)) + slices * _VISION_TOKENS_PER_SLICE
        if step.frames:
            state.seen = step.frames[-1].size
        user_speaking = step.audio.size > 0 and float(np.sqrt(np.mean(step.audio ** 2))) > _SPEECH_RMS
        if user_speaking:
            state.heard_s += chunk_s
            state.pending.clear()  # the user barged in: stop talking, keep listening
        forced = step.force_listen or state.step <= config.force_listen_count
        if not forced and not state.pending and not user_speaking and state.heard_s >= _MIN_HEARD_S:
            state.pending = compose_duplex_reply(state.heard_s, state.seen).split()
            state.heard_s = 0.0
        if forced or not state.pending:
            return DuplexOutput(is_listen=True, vision_slices=slices)
        await self.faults.before_chunk(step.fault)
        count = min(_WORDS_PER_DUPLEX_STEP, config.max_new_speak_tokens_per_chunk)
        words, state.pending = state.pending[:count], state.pending[count:]
        text = " ".join(words) + ("" if not state.pending else " ")
        audio = None
        if config.generate_audio:
            audio = await asyncio.to_thread(speak, text, max(chunk_s, config.chunk_ms / 1000))
        state.kv += len(words)
        return DuplexOutput(is_listen=False, text=text, audio=audio, end_of_turn=not state.pending,
                            n_tokens=len(words), n_tts_tokens=len(words) * 8 if audio is not None else None,
                            vision_slices=slices, costs_ms={"cost_llm_ms": self.options.duplex_step_ms})

    async def duplex_finalize(self) -> None:
        await self._sleep_ms(self.options.finalize_ms)

    async def duplex_close(self) -> None:
        self._duplex = _DuplexState()
        self._mode = "chat"

    async def clear_cache(self) -> None:
        self._stream_kv = 0
        self._last_user = None

    # -- timing -------------------------------------------------------------------------------------
    def _seconds(self, ms: float) -> float:
        return max(0.0, ms) / 1000.0 * self.faults.plan.slowdown

    async def _sleep_ms(self, ms: float) -> None:
        if ms > 0:
            await asyncio.sleep(self._seconds(ms))

    async def _sleep_tokens(self, count: int) -> None:
        if self.options.tokens_per_s > 0:
            await self._sleep_ms(1000.0 * count / self.options.tokens_per_s)


class _DuplexState:
    def __init__(self, kv: int = 0) -> None:
        self.kv = kv
        self.step = 0
        self.heard_s = 0.0
        self.seen: tuple[int, int] | None = None
        self.pending: list[str] = []


def render_duplex_prompt(system_prompt: str) -> str:
    """The duplex system prompt as the model sees it (reference audio goes between the markers)."""
    return f"<|im_start|>system\n{system_prompt}\n<|audio_start|><|audio_end|><|im_end|>"


def compose_reply(turn: Turn | None) -> str:
    """A deterministic answer describing what the simulated model was given."""
    if turn is None:
        return f"{SIM_TAG} Hello. This answer comes from the simulated backend, not the model."
    texts = " ".join(p for p in turn.parts if isinstance(p, str)).split()
    said = " ".join(texts[:12]) + (" ..." if len(texts) > 12 else "")
    heard = sum(p.samples.size for p in turn.parts if isinstance(p, Audio)) / INPUT_SAMPLE_RATE
    images = [p.image.size for p in turn.parts if isinstance(p, Image)]
    videos = sum(1 for p in turn.parts if isinstance(p, Video))
    sentences = [SIM_TAG]
    if said:
        sentences.append(f'You said: "{said}".')
    if heard:
        sentences.append(f"I heard {heard:.1f} seconds of audio.")
    if images:
        sentences.append(f"I see {len(images)} image{'s' if len(images) > 1 else ''} "
                         f"({', '.join(f'{w}x{h}' for w, h in images)}).")
    if videos:
        sentences.append(f"I was given {videos} video{'s' if videos > 1 else ''}.")
    sentences.append("This answer comes from the simulated backend, not the model.")
    return " ".join(sentences)


def compose_duplex_reply(heard_s: float, seen: tuple[int, int] | None) -> str:
    sight = f" and I can see a {seen[0]}x{seen[1]} picture" if seen else ""
    return f"{SIM_TAG} I heard you speak for {heard_s:.1f} seconds{sight}. This is the simulated backend."


def _last_user(turns: list[Turn]) -> Turn | None:
    return next((t for t in reversed(turns) if t.role == "user"), None)


def _turn_tokens(turn: Turn) -> int:
    tokens = 4  # role markers
    for part in turn.parts:
        if isinstance(part, str):
            tokens += max(1, int(len(part.split()) * 1.3))
        elif isinstance(part, Audio):
            tokens += int(part.samples.size / INPUT_SAMPLE_RATE * _AUDIO_TOKENS_PER_S) + 2
        elif isinstance(part, Image):
            tokens += _VISION_TOKENS_PER_SLICE + 2
        else:
            tokens += 10 * _VISION_TOKENS_PER_SLICE
    return tokens
