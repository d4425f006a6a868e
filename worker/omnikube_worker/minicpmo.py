"""The real backend: MiniCPM-o 4.5 through transformers' remote code, on one GPU.

Loading (`load`, in a thread while /health says `loading`):
  1. attention: `auto` picks flash_attention_2 when `flash_attn` imports, else sdpa; the audio
     encoder (Whisper) always runs on sdpa, whatever the rest uses;
  2. `AutoModel.from_pretrained(trust_remote_code=True)` in bf16, then `.eval().cuda()`;
  3. the `pt_path` override: a state dict loaded with strict=False, missing/unexpected keys logged;
  4. the TTS vocoder (token2wav from minicpmo-utils' `stepaudio2`, or cosyvoice2) and the
     default reference voice; one duplex view (`as_duplex`) on the same weights;
  5. optional `torch.compile` of the LLM and TTS decoders, with one warm-up pass.

torch, transformers and the model's code are imported inside methods only, so importing this
module costs nothing. `ModelCalls` holds the translation between the worker's plain data and the
model's methods; tests drive it with a stand-in object that has the model's method signatures.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import inspect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator

import numpy as np

from omnikube.protocol import INPUT_SAMPLE_RATE, DuplexConfig

from .backend import (Audio, Backend, ChatResult, DuplexInput, DuplexOutput, DuplexSetup, GenerateOptions,
                      Image, Piece, Turn, Video)
from .settings import WorkerSettings

log = logging.getLogger("omnikube.worker.minicpmo")

STREAMING_SESSION = "streaming"
DUPLEX_PROMPT_PREFIX = "<|im_start|>system\n{prompt}\n<|audio_start|>"
DUPLEX_PROMPT_SUFFIX = "<|audio_end|><|im_end|>"
# Per-session duplex sampling keys (the others are fixed when the duplex view is built).
DUPLEX_STEP_KEYS = ("decode_mode", "temperature", "top_k", "top_p", "listen_prob_scale", "listen_top_k",
                    "text_repetition_penalty", "text_repetition_window_size", "length_penalty")
DUPLEX_LOAD_KEYS = ("generate_audio", "ls_mode", "max_new_speak_tokens_per_chunk", "temperature", "top_k", "top_p",
                    "force_listen_count", "chunk_ms")
VOICE_PROMPTS = {
    "en": ("Clone the voice in the provided audio prompt.", "Please assist users while maintaining this voice style."),
    "zh": ("模仿输入音频中的声音特征。", "请用这种声音风格来为用户提供帮助。"),
}
_COSTS = ("cost_llm", "cost_tts_prep", "cost_tts", "cost_token2wav", "cost_all")


# ---- loading -----------------------------------------------------------------------------------

def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(configured: str, flash_available: bool | None = None) -> str:
    """The guide's rule: auto -> flash_attention_2 if flash-attn is importable, else sdpa."""
    available = flash_attention_available() if flash_available is None else flash_available
    if configured == "auto":
        return "flash_attention_2" if available else "sdpa"
    if configured == "flash_attention_2" and not available:
        raise RuntimeError("model.attn_implementation is flash_attention_2 but flash-attn is not installed; "
                           "install it or use auto/sdpa")
    if configured not in ("flash_attention_2", "sdpa", "eager"):
        raise ValueError(f"unknown attn_implementation {configured!r}")
    return configured


def apply_attention(config: Any, attn: str) -> Any:
    """Set the attention implementation on a model config; the audio encoder always gets sdpa
    (Whisper's encoder does not support flash_attention_2)."""
    config._attn_implementation = attn
    for name in ("llm_config", "text_config", "vision_config", "tts_config"):
        sub = getattr(config, name, None)
        if sub is not None:
            sub._attn_implementation = attn
    audio = getattr(config, "audio_config", None)
    if audio is not None:
        audio._attn_implementation = "sdpa"
    return config


@dataclass
class OverrideReport:
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def apply_weight_override(module: Any, pt_path: str) -> OverrideReport:
    """Load a .pt state dict over `module` (strict=False) and say what did not match."""
    import torch

    state = torch.load(pt_path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{pt_path}: expected a state dict, got {type(state).__name__}")
    result = module.load_state_dict(state, strict=False)
    report = OverrideReport(loaded=len(state) - len(result.unexpected_keys), missing=list(result.missing_keys),
                            unexpected=list(result.unexpected_keys))
    log.info("pt_path %s: %d tensors applied, %d model keys not in the file, %d file keys not in the model",
             pt_path, report.loaded, len(report.missing), len(report.unexpected))
    if report.unexpected:
        log.warning("pt_path %s: unexpected keys (ignored), first: %s", pt_path, report.unexpected[:10])
    return report


def require_vocoder(chat_vocoder: str) -> None:
    """The vocoders come from minicpmo-utils: token2wav in `stepaudio2`, cosyvoice2 in `cosyvoice`."""
    module = {"token2wav": "stepaudio2", "cosyvoice2": "cosyvoice"}.get(chat_vocoder)
    if module is None:
        raise ValueError(f"unknown chat_vocoder {chat_vocoder!r}")
    if importlib.util.find_spec(module) is None:
        raise RuntimeError(f"the {chat_vocoder} vocoder needs minicpmo-utils[all] (module {module!r} is missing)")


def load_reference_voice(path: str | None) -> np.ndarray | None:
    """A reference voice file as 16 kHz mono float32: librosa when installed (any format), else
    a PCM WAV read here and resampled linearly."""
    if not path:
        return None
    try:
        import librosa
    except ImportError:
        return _read_wav_16k(path)
    audio, _ = librosa.load(path, sr=INPUT_SAMPLE_RATE, mono=True)
    return audio.astype(np.float32)


def _read_wav_16k(path: str) -> np.ndarray:
    import wave

    from .recording import resample

    with wave.open(path) as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        frames = wav.readframes(wav.getnframes())
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit WAV; install librosa or use 16-bit PCM")
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return resample(samples, rate, INPUT_SAMPLE_RATE)


# ---- translation between plain data and the model's methods -------------------------------------

def to_numpy(waveform: Any) -> np.ndarray | None:
    if waveform is None:
        return None
    if hasattr(waveform, "detach"):
        waveform = waveform.detach().float().cpu().numpy()
    return np.asarray(waveform, dtype=np.float32).reshape(-1)


def model_content(turn: Turn) -> list[Any]:
    """A turn's parts as the model's `msgs` content: str, 16 kHz float32 arrays, PIL images."""
    content: list[Any] = []
    for part in turn.parts:
        if isinstance(part, str):
            content.append(part)
        elif isinstance(part, Audio):
            content.append(part.samples)
        elif isinstance(part, Image):
            content.append(part.image)
        elif isinstance(part, Video):
            content.extend(video_content(part))
    return content


def video_content(video: Video) -> list[Any]:
    """One frame per second interleaved with that second's audio (and a stacked frame), as the
    original feeds videos. Frame extraction comes from minicpmo-utils and needs ffmpeg."""
    import os
    import tempfile

    from minicpmo.utils import get_video_frame_audio_segments  # type: ignore[import-not-found]

    with tempfile.NamedTemporaryFile(suffix=".mp4", delete=False) as handle:
        handle.write(video.data)
    try:
        frames, segments, stacked = get_video_frame_audio_segments(
            handle.name, stack_frames=video.stack_frames, use_ffmpeg=True, adjust_audio_length=True)
    finally:
        os.unlink(handle.name)
    content: list[Any] = []
    for index, frame in enumerate(frames):
        content.append(frame)
        if index < len(segments):
            content.append(segments[index])
        if stacked and index < len(stacked) and stacked[index] is not None:
            content.append(stacked[index])
    return content


def voice_system_turn(voice: np.ndarray, language: str) -> dict[str, Any]:
    before, after = VOICE_PROMPTS.get(language, VOICE_PROMPTS["en"])
    return {"role": "system", "content": [before, voice, after]}


class ModelCalls:
    """Every call the worker makes into the model, serialised by one lock (one GPU, one stream).

    `model` is the remote-code MiniCPMO instance (or a stand-in with the same methods); `duplex`
    is its duplex view; `default_voice` the reference voice used when a request brings none.
    """

    def __init__(self, model: Any, tokenizer: Any, duplex: Any, default_voice: np.ndarray | None = None,
                 default_voice_path: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.duplex = duplex
        self.default_voice = default_voice
        self.default_voice_path = default_voice_path
        self.lock = threading.Lock()
        self.mode = "chat"
        self.duplex_config = DuplexConfig()

    # -- chat --
    def chat(self, turns: list[Turn], options: GenerateOptions) -> ChatResult:
        msgs = [{"role": t.role, "content": model_content(t)} for t in turns]
        voice = options.voice if options.voice is not None else self._voice_from_path(options.voice_path)
        if options.generate_audio:
            voice = self.default_voice if voice is None else voice
            if options.tts_mode != "default" and voice is not None and not any(m["role"] == "system" for m in msgs):
                msgs.insert(0, voice_system_turn(voice, options.language))
        with self.lock:
            self._set_mode("chat")
            _seed(options)
            result = call_supported(
                self.model.chat,
                msgs=msgs, tokenizer=self.tokenizer, sampling=options.do_sample,
                max_new_tokens=options.max_new_tokens, stream=False,
                use_tts_template=options.use_tts_template or options.generate_audio,
                generate_audio=options.generate_audio, tts_ref_audio=voice if options.generate_audio else None,
                omni_mode=options.omni_mode, enable_thinking=options.enable_thinking, return_prompt=True,
                max_slice_nums=options.max_slice_nums, **_sampling_kwargs(options),
            )
            stats = dict(getattr(self.model, "_last_chat_token_stats", None) or {})
        text, prompt, waveform = _split_chat_result(result, options.generate_audio)
        generated = int(stats.get("generated_tokens") or self._count_tokens(text))
        input_tokens = int(stats.get("input_tokens") or self._count_tokens(prompt or ""))
        return ChatResult(text=text, audio=to_numpy(waveform), input_tokens=input_tokens,
                          generated_tokens=generated, prompt=prompt)

    # -- streaming --
    def stream_reset(self) -> None:
        with self.lock:
            self._set_mode("chat")
            self.model.reset_session(reset_token2wav_cache=False)

    def stream_prefill(self, turns: list[Turn], options: GenerateOptions) -> int:
        with self.lock:
            self._set_mode("chat")
            if options.voice is not None:
                self.model.init_token2wav_cache(prompt_speech_16k=options.voice)
            for index, turn in enumerate(turns):
                content: Any = model_content(turn)
                if len(content) == 1 and isinstance(content[0], str):
                    content = content[0]  # a lone text goes in as a plain string, as the model expects
                self.model.streaming_prefill(
                    session_id=STREAMING_SESSION,
                    msgs=[{"role": turn.role, "content": content}],
                    omni_mode=options.omni_mode, max_slice_nums=options.max_slice_nums,
                    use_tts_template=options.use_tts_template, enable_thinking=options.enable_thinking,
                    is_last_chunk=index == len(turns) - 1,
                )
            return self.llm_cache_length()

    def stream_generate(self, options: GenerateOptions, stop: "threading.Event | _AnyOf") -> Iterator[Piece]:
        """Blocking iterator over the reply; holds the model lock until it ends or `stop` is set."""
        with self.lock:
            self._set_mode("chat")
            if options.generate_audio and options.voice is None and self.default_voice is not None:
                self.model.init_token2wav_cache(prompt_speech_16k=self.default_voice)
            _seed(options)
            items = call_supported(
                self.model.streaming_generate,
                session_id=STREAMING_SESSION, do_sample=options.do_sample, generate_audio=options.generate_audio,
                max_new_tokens=options.max_new_tokens, use_tts_template=True, length_penalty=options.length_penalty,
                **_sampling_kwargs(options),
            )
            try:
                for item in items:
                    if stop.is_set():
                        break
                    piece = _stream_piece(item, options.generate_audio, self._count_tokens)
                    if piece is not None:
                        yield piece
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()

    # -- duplex --
    def duplex_prepare(self, setup: DuplexSetup) -> int:
        if setup.config is not None:
            self.duplex_config = setup.config  # persists for later sessions, as in the original
        llm_voice = setup.ref_audio if setup.ref_audio is not None else self._voice_from_path(setup.ref_audio_path)
        with self.lock:
            self._set_mode("duplex")
            for key in ("force_listen_count", "max_new_speak_tokens_per_chunk"):
                if hasattr(self.duplex, key):
                    setattr(self.duplex, key, getattr(self.duplex_config, key))
            prompt = self.duplex.prepare(
                prefix_system_prompt=DUPLEX_PROMPT_PREFIX.format(prompt=setup.system_prompt),
                suffix_system_prompt=DUPLEX_PROMPT_SUFFIX,
                ref_audio=llm_voice if llm_voice is not None else self.default_voice,
                prompt_wav_path=setup.ref_audio_path or self.default_voice_path,
            )
            if setup.tts_ref_audio is not None:
                self.model.init_token2wav_cache(prompt_speech_16k=setup.tts_ref_audio)
        rendered = prompt if isinstance(prompt, str) else (DUPLEX_PROMPT_PREFIX.format(prompt=setup.system_prompt)
                                                            + DUPLEX_PROMPT_SUFFIX)
        return len(rendered)

    def duplex_step(self, step: DuplexInput) -> DuplexOutput:
        sampling = {key: getattr(self.duplex_config, key) for key in DUPLEX_STEP_KEYS}
        with self.lock:
            call_supported(self.duplex.streaming_prefill, audio_waveform=step.audio, frame_list=step.frames or None,
                           max_slice_nums=step.max_slice_nums)
            result = call_supported(self.duplex.streaming_generate, force_listen=step.force_listen,
                                    force_listen_override=step.force_listen, prompt_wav_path=self.default_voice_path,
                                    max_new_speak_tokens_per_chunk=self.duplex_config.max_new_speak_tokens_per_chunk,
                                    **sampling)
        costs = {f"{key}_ms": float(result[key]) * 1000.0 for key in _COSTS if result.get(key)}
        audio = to_numpy(result.get("audio_waveform")) if self.duplex_config.generate_audio else None
        return DuplexOutput(
            is_listen=bool(result.get("is_listen", True)), text=result.get("text") or "", audio=audio,
            end_of_turn=bool(result.get("end_of_turn", False)), n_tokens=result.get("n_tokens"),
            n_tts_tokens=result.get("n_tts_tokens"),
            vision_slices=len(step.frames) * step.max_slice_nums if step.frames else 0, costs_ms=costs,
        )

    def duplex_finalize(self) -> None:
        finalize = getattr(self.duplex, "finalize", None)
        if finalize is not None:
            with self.lock:
                finalize()

    def duplex_close(self) -> None:
        """Stop the duplex session and free its caches (about 1.5 GB on the GPU)."""
        with self.lock:
            stop = getattr(self.duplex, "set_session_stop", None) or getattr(self.duplex, "stop", None)
            if stop is not None:
                stop()
            reset_state = getattr(self.duplex, "_reset_streaming_state", None)
            if reset_state is not None:
                reset_state()
            decoder = getattr(self.duplex, "decoder", None)
            if decoder is not None and hasattr(decoder, "reset"):
                decoder.reset()
            self.model.reset_session(reset_token2wav_cache=True)
            self.mode = "chat"
        gc.collect()
        _empty_cuda_cache()

    def clear_cache(self) -> None:
        with self.lock:
            self.model.reset_session(reset_token2wav_cache=False)

    # -- bookkeeping --
    def kv_cache_length(self) -> int:
        if self.mode == "duplex":
            decoder = getattr(self.duplex, "decoder", None)
            length = getattr(decoder, "get_cache_length", None)
            return int(length()) if length is not None else 0
        return self.llm_cache_length()

    def llm_cache_length(self) -> int:
        length = getattr(self.model, "_get_kv_cache_length", None)
        return int(length()) if length is not None else 0

    def _set_mode(self, mode: str) -> None:
        """Mode switching is a flag flip on the shared weights; leaving duplex drops its state."""
        if mode != self.mode and self.mode == "duplex":
            self.model.reset_session(reset_token2wav_cache=True)
        self.mode = mode

    def _voice_from_path(self, path: str | None) -> np.ndarray | None:
        return load_reference_voice(path) if path else None

    def _count_tokens(self, text: str) -> int:
        if not text:
            return 0
        encode = getattr(self.tokenizer, "encode", None)
        return len(encode(text)) if encode is not None else len(text.split())


def _sampling_kwargs(options: GenerateOptions) -> dict[str, Any]:
    """The request's sampling keys, for the model's generation config; greedy decoding takes none.
    (The original passed only `do_sample`, so the model's defaults always applied.)"""
    if not options.do_sample:
        return {}
    return {"temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k}


def _seed(options: GenerateOptions) -> None:
    """Seed torch's generators for this reply; the model lock is held, so no other reply interleaves."""
    if options.seed is not None and options.do_sample:
        import torch

        torch.manual_seed(options.seed)


def call_supported(method: Any, **kwargs: Any) -> Any:
    """Call a model method with the keyword arguments its signature takes; drop the rest.

    The remote code's duplex methods have changed names between revisions (`force_listen` vs
    `force_listen_override`, sampling keys); passing only what the loaded revision accepts keeps
    one worker working across them. What was dropped is logged once per method.
    """
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return method(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        accepted = kwargs
    else:
        accepted = {k: v for k, v in kwargs.items() if k in parameters}
    dropped = sorted(set(kwargs) - set(accepted))
    name = getattr(method, "__qualname__", repr(method))
    if dropped and name not in _DROPPED_LOGGED:
        _DROPPED_LOGGED.add(name)
        log.info("%s does not take %s; not passed", name, ", ".join(dropped))
    return method(**accepted)


_DROPPED_LOGGED: set[str] = set()


class _AnyOf:
    """Set when any of its events is set (the session's stop, or the consumer leaving)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _split_chat_result(result: Any, with_audio: bool) -> tuple[str, str | None, Any]:
    """model.chat returns answer | (answer, prompt) | (answer, waveform) | (answer, prompt, waveform)."""
    if not isinstance(result, tuple):
        return str(result), None, None
    if len(result) == 3:
        return str(result[0]), result[1], result[2]
    if len(result) == 2:
        return (str(result[0]), None, result[1]) if with_audio and not isinstance(result[1], str) else \
            (str(result[0]), result[1], None)
    return str(result[0]), None, None


def _stream_piece(item: Any, with_audio: bool, count_tokens) -> Piece | None:
    """streaming_generate yields (waveform, text) with audio, else (text, ...) or a bare string."""
    if item is None:
        return None
    if isinstance(item, str):
        return Piece(text=item, tokens=count_tokens(item))
    if not isinstance(item, (tuple, list)) or not item:
        return None
    if with_audio:
        waveform, text = item[0], item[1] if len(item) > 1 else None
        text = text if isinstance(text, str) else ""
        audio = to_numpy(waveform)
        if not text and (audio is None or not audio.size):
            return None
        return Piece(text=text, audio=audio, tokens=count_tokens(text))
    text = item[0] if isinstance(item[0], str) else ""
    return Piece(text=text, tokens=count_tokens(text)) if text else None


def _empty_cuda_cache() -> None:
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the backend ---------------------------------------------------------------------------------

class MiniCPMoBackend(Backend):
    name = "minicpmo"
    simulated = False

    def __init__(self, settings: WorkerSettings, calls: ModelCalls | None = None) -> None:
        self.settings = settings
        self.calls = calls
        self.override: OverrideReport | None = None

    def load(self) -> None:
        if self.calls is not None:  # built around an already loaded model (tests, embedding)
            return
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        s = self.settings
        started = time.monotonic()
        attn = resolve_attn_implementation(s.attn_implementation)
        require_vocoder(s.chat_vocoder)
        config = apply_attention(AutoConfig.from_pretrained(s.model_path, trust_remote_code=True), attn)
        # Quantized checkpoints (AWQ, GPTQ) keep their own dtypes; everything else runs in bf16.
        quantized = getattr(config, "quantization_config", None) is not None
        model = AutoModel.from_pretrained(s.model_path, config=config, trust_remote_code=True,
                                          attn_implementation=attn, torch_dtype="auto" if quantized else torch.bfloat16,
                                          init_vision=True, init_audio=True, init_tts=True)
        if s.pt_path:
            self.override = apply_weight_override(model, s.pt_path)
        if not quantized:
            model = model.bfloat16()
        model = model.eval().cuda()
        tokenizer = AutoTokenizer.from_pretrained(s.model_path, trust_remote_code=True)
        model.init_tts()
        duplex_defaults = DuplexConfig()
        duplex = model.as_duplex(device="cuda", **{k: getattr(duplex_defaults, k) for k in DUPLEX_LOAD_KEYS})
        voice = load_reference_voice(s.ref_audio_path)
        self.calls = ModelCalls(model, tokenizer, duplex, voice, s.ref_audio_path)
        log.info("MiniCPM-o loaded in %.1f s (attn %s, audio encoder sdpa, vocoder %s)",
                 time.monotonic() - started, attn, s.chat_vocoder)
        if s.compile:
            self._compile(model, torch)

    def _compile(self, model: Any, torch: Any) -> None:
        """torch.compile the LLM and TTS decoders, then run one duplex step so the first user does
        not pay the compilation (about a minute)."""
        started = time.monotonic()
        for owner in (getattr(model, "llm", None), getattr(model, "tts", None)):
            if owner is not None and hasattr(owner, "model"):
                owner.model = torch.compile(owner.model, mode="default", dynamic=True)
        assert self.calls is not None
        self.calls.duplex_prepare(DuplexSetup(system_prompt="warm-up"))
        self.calls.duplex_step(DuplexInput(audio=np.zeros(INPUT_SAMPLE_RATE, dtype=np.float32)))
        self.calls.duplex_close()
        log.info("torch.compile and warm-up took %.1f s", time.monotonic() - started)

    @property
    def _ready(self) -> ModelCalls:
        if self.calls is None:
            raise RuntimeError("model not loaded")
        return self.calls

    @property
    def kv_cache_length(self) -> int:
        return self.calls.kv_cache_length() if self.calls is not None else 0

    async def chat(self, turns: list[Turn], options: GenerateOptions) -> ChatResult:
        return await asyncio.to_thread(self._ready.chat, turns, options)

    async def stream_reset(self) -> None:
        await asyncio.to_thread(self._ready.stream_reset)

    async def stream_prefill(self, turns: list[Turn], options: GenerateOptions) -> int:
        return await asyncio.to_thread(self._ready.stream_prefill, turns, options)

    async def stream_generate(self, options: GenerateOptions, stop: threading.Event) -> AsyncIterator[Piece]:
        """Runs the blocking generator in a thread and hands its pieces to the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Piece | BaseException | None] = asyncio.Queue()
        abandoned = threading.Event()

        def produce() -> None:
            try:
                for piece in self._ready.stream_generate(options, _AnyOf(stop, abandoned)):
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        thread = threading.Thread(target=produce, name="minicpmo-generate", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            abandoned.set()  # a consumer that leaves early (client gone) stops the producer too

    async def duplex_prepare(self, setup: DuplexSetup) -> int:
        return await asyncio.to_thread(self._ready.duplex_prepare, setup)

    async def duplex_step(self, step: DuplexInput) -> DuplexOutput:
        return await asyncio.to_thread(self._ready.duplex_step, step)

    async def duplex_finalize(self) -> None:
        await asyncio.to_thread(self._ready.duplex_finalize)

    async def duplex_close(self) -> None:
        await asyncio.to_thread(self._ready.duplex_close)

    async def clear_cache(self) -> None:
        await asyncio.to_thread(self._ready.clear_cache)
