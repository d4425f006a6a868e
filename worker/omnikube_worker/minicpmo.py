"""The real backend: MiniCPM-o 4.5's own code, one loaded model per worker, on a GPU or the CPU.

Loading (`load`, in a thread while /health says `loading`), as the demo's worker does:
  1. the model's code is imported from the model directory itself (`model_code.py`); `unified`
     directories (`modeling_minicpmo_unified.py`) serve every feature, `hf` ones (only the
     Hugging Face style class) serve chat and streaming without audio out and refuse the rest;
  2. the device: `model.device` (`auto`: the GPU when torch sees one, else the CPU), with
     minicpmo-utils adapted to it (`model_device.py`);
  3. attention: `auto` picks flash_attention_2 when `flash_attn` imports, else sdpa; the audio
     encoder (Whisper) always runs on sdpa;
  4. `from_pretrained` in bf16, the `pt_path` override (strict=False, mismatches logged);
  5. `init_unified`: the token2wav vocoder (`assets/token2wav/`) and the duplex capability on the
     same weights; the default reference voice (`audio.ref_audio_path`, else the model
     directory's `assets/ref_audio/ref_minicpm_signature.wav`);
  6. optional `torch.compile` through the model's own `apply_torch_compile` and warm-up.

torch and the model's code are imported inside methods only, so importing this module costs
nothing. `ModelCalls` is the translation between the worker's plain data and the model's calls;
every call holds one lock (one model, one stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib.util
import inspect
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import numpy as np

from omnikube.audio import decode_audio
from omnikube.config import DEFAULT_MODEL_PATH, ChatCache
from omnikube.protocol import INPUT_SAMPLE_RATE, DuplexConfig

from . import metrics
from .backend import (Audio, Backend, ChatResult, DuplexInput, DuplexOutput, DuplexSetup, GenerateOptions,
                      Image, Piece, Turn, Unsupported, Video)
from .settings import WorkerSettings

log = logging.getLogger("omnikube.worker.minicpmo")

STREAMING_SESSION = "streaming"
# The static chat cache holds the longest reply there can be: the model's chat truncates its input at
# 8192 tokens and the protocol allows 4096 new ones. One size for the worker's life means the compiled
# decoding step never meets a new shape (a new size would compile again, about 40 s on an H100);
# full size that is 1.7 GiB of bf16 keys and values.
CHAT_CACHE_TOKENS = 8192 + 4096
DEFAULT_VOICE_IN_MODEL = Path("assets") / "ref_audio" / "ref_minicpm_signature.wav"
DUPLEX_PROMPT_PREFIX = "<|im_start|>system\n{prompt}\n<|audio_start|>"
DUPLEX_PROMPT_SUFFIX = "<|audio_end|><|im_end|>"
# The session's duplex settings passed to each `DuplexCapability.streaming_generate` call.
DUPLEX_STEP_KEYS = ("decode_mode", "temperature", "top_k", "top_p", "listen_prob_scale", "listen_top_k",
                    "text_repetition_penalty", "text_repetition_window_size", "length_penalty",
                    "max_new_speak_tokens_per_chunk")
VOICE_PROMPTS = {
    "en": ("Clone the voice in the provided audio prompt.", "Please assist users while maintaining this voice style."),
    "zh": ("模仿输入音频中的声音特征。", "请用这种声音风格来为用户提供帮助。"),
}
_COSTS = ("cost_llm", "cost_tts_prep", "cost_tts", "cost_token2wav", "cost_all")
HF_LAYOUT_REFUSAL = ("this model directory has only the Hugging Face style class (modeling_minicpmo.py), which {what}; "
                     "use a directory with modeling_minicpmo_unified.py for it")


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
    """The unified class speaks through token2wav (`stepaudio2` in minicpmo-utils). CosyVoice2's
    `cosyvoice` module is not part of minicpmo-utils 1.0.7: asking for it fails here, clearly."""
    module = {"token2wav": "stepaudio2", "cosyvoice2": "cosyvoice"}.get(chat_vocoder)
    if module is None:
        raise ValueError(f"unknown chat_vocoder {chat_vocoder!r}")
    if importlib.util.find_spec(module) is None:
        raise RuntimeError(f"the {chat_vocoder} vocoder needs the {module!r} module, which is not installed "
                           f"(token2wav comes with minicpmo-utils[all]; cosyvoice2 is not part of minicpmo-utils 1.0.7)")


def model_directory(model_path: str) -> Path:
    """A local model directory; a Hub id is downloaded once (where the machine may reach the Hub)."""
    path = Path(model_path).expanduser()
    if path.is_dir():
        return path.resolve()
    # A path that is not there (an unmounted volume, a typo) would otherwise reach the Hub client,
    # which refuses it as a malformed repository id and never says the directory is missing.
    if path.exists() or path.is_absolute() or model_path.startswith((".", "~")):
        what = "is a file, not a model directory" if path.exists() else "does not exist"
        raise FileNotFoundError(f"model.path {model_path!r} {what} (a model directory, or a Hugging Face id like "
                                f"{DEFAULT_MODEL_PATH})")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_path))


def default_voice_path(configured: str | None, model_dir: Path) -> str | None:
    """`audio.ref_audio_path` when it names a file (relative to the working directory or the model
    directory), else the model directory's own default voice, else none."""
    for candidate in ([Path(configured), model_dir / configured] if configured else []) + [model_dir / DEFAULT_VOICE_IN_MODEL]:
        if candidate.is_file():
            return str(candidate)
    return None


def load_reference_voice(path: str | None) -> np.ndarray | None:
    """A reference voice file in any format FFmpeg decodes, as 16 kHz mono float32."""
    if not path:
        return None
    return decode_audio(Path(path).read_bytes(), rate=INPUT_SAMPLE_RATE, what=f"reference voice {path}")


# ---- translation between plain data and the model's methods -------------------------------------

def to_numpy(waveform: Any) -> np.ndarray | None:
    if waveform is None:
        return None
    if hasattr(waveform, "detach"):
        waveform = waveform.detach().float().cpu().numpy()
    return np.asarray(waveform, dtype=np.float32).reshape(-1)


def model_content(turn: Turn) -> list[Any]:
    """A turn's parts as the model's `msgs` content, always a list (a plain string would be split
    into characters): str, 16 kHz float32 arrays, PIL images."""
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


def samples(options: GenerateOptions) -> bool:
    """Temperature 0 means greedy (as the OpenAI API defines it); dividing logits by it would not."""
    return options.do_sample and options.temperature > 0


def chat_generation(chat_cache: ChatCache) -> dict[str, Any]:
    """The LLM's generation settings while it decodes a chat reply, for `model.chat_cache`. A static cache keeps every decoding
    step's shapes the same, so transformers compiles the step once (on a GPU only) instead of running
    it module by module from Python, which is where eager decoding spends most of its time. The
    compile mode is "default", not transformers' CUDA-graph "reduce-overhead": chat reads every
    step's hidden states after decoding (the TTS speaks from them), and a CUDA graph overwrites its
    outputs on the next replay."""
    if chat_cache != ChatCache.static:
        return {}
    from transformers import CompileConfig

    return {"cache_implementation": "static", "compile_config": CompileConfig(fullgraph=True, dynamic=False, mode="default")}


def sampling_kwargs(options: GenerateOptions) -> dict[str, Any]:
    """The request's sampling keys; greedy decoding takes none. Beam search is never used: both
    model classes default to `num_beams=3`, which the protocol has no way to ask for."""
    if not samples(options):
        return {"num_beams": 1}
    return {"num_beams": 1, "temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k}


def _seed(options: GenerateOptions) -> None:
    """Seed torch's generators for this reply; the model lock is held, so no other reply interleaves."""
    if options.seed is not None and samples(options):
        import torch

        torch.manual_seed(options.seed)


class _AnyOf:
    """Set when any of its events is set (the session's stop, or the consumer leaving)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class ModelCalls:
    """Every call the worker makes into the loaded model, serialised by one lock.

    `model` is the model directory's `MiniCPMO`; `layout` says which class it is (see module doc).
    """

    def __init__(self, model: Any, layout: str, modes: Any = None, default_voice_path: str | None = None,
                 chat_cache: ChatCache = ChatCache.dynamic) -> None:
        self.model = model
        self.layout = layout
        self.modes = modes                       # the unified class's ProcessorMode enum
        self.default_voice_path = default_voice_path
        self.default_voice = load_reference_voice(default_voice_path)
        self.lock = threading.Lock()
        self.mode: str | None = None
        self.voice_cached: int | None = None     # id() of the voice the vocoder's stream cache holds
        self.duplex_config = DuplexConfig()
        self.duplex_voice_file: str | None = None
        self.last_mode_switch_s: float | None = None
        # What this model code's chat accepts, read once: the two classes differ.
        chat_params = inspect.signature(model.chat).parameters
        self.chat_params = frozenset(chat_params)
        sampler = chat_params.get("tts_sampling_params")
        # The model code's own TTSSamplingParams dataclass, found as chat's default.
        self.tts_sampler = sampler.default if sampler is not None and dataclasses.is_dataclass(sampler.default) else None
        # Set on the LLM's generation config only while a chat reply decodes: the model's chat drops
        # `generate` keywords it does not know, and its streaming and duplex paths hand `generate`
        # their own cache, which transformers refuses together with a cache_implementation.
        self.chat_generation = chat_generation(chat_cache)
        if self.chat_generation:
            # transformers keeps a static cache on the model and reuses it while it is large enough.
            model.llm._get_cache(cache_implementation="static", batch_size=1, max_cache_len=CHAT_CACHE_TOKENS,
                                 device=model.llm.device, model_kwargs={})

    @property
    def unified(self) -> bool:
        return self.layout == "unified"

    def _require_unified(self, what: str) -> None:
        if not self.unified:
            raise Unsupported(HF_LAYOUT_REFUSAL.format(what=what))

    def _tokenizer(self) -> Any:
        processor = getattr(self.model, "processor", None)
        return getattr(processor, "tokenizer", None)

    # -- chat --
    def _chat_extras(self, options: GenerateOptions) -> dict[str, Any]:
        """Chat settings this model code's chat takes beyond the basics: how audio clips are encoded, `use_image_id`, and the TTS sampler's settings."""
        extras: dict[str, Any] = {}
        if "merge_audio_from_same_content" in self.chat_params:
            # Merged audio clips of one message (a video's 1 s segments, two clips) make one embedding,
            # which the model splits across their placeholders only in its stream_input mode; otherwise
            # each clip must be encoded on its own, or the prompt's shapes do not match.
            extras["merge_audio_from_same_content"] = bool(getattr(self.model.config, "stream_input", False))
        if options.use_image_id is not None and "use_image_id" in self.chat_params:
            extras["use_image_id"] = options.use_image_id
        if options.generate_audio and options.tts_sampling and self.tts_sampler is not None:
            known = {f.name for f in dataclasses.fields(self.tts_sampler)}
            values = {k: v for k, v in options.tts_sampling.items() if k in known}
            if values.get("top_k") == 0:
                values["top_k"] = None  # the protocol's "0 disables"; the model's sampler refuses 0
            extras["tts_sampling_params"] = dataclasses.replace(self.tts_sampler, **values)
        return extras

    @contextlib.contextmanager
    def _chat_decoding(self) -> Iterator[None]:
        if not self.chat_generation:
            yield
            return
        llm = self.model.llm
        config = llm.generation_config
        saved = {key: getattr(config, key, None) for key in self.chat_generation}
        # The model code replaces the LLM's input preparation with one written for its dynamic cache
        # (it reads `seen_tokens`, which a static cache has not); transformers' own handles both.
        glue = llm.__dict__.pop("prepare_inputs_for_generation", None)
        for key, value in self.chat_generation.items():
            setattr(config, key, value)
        try:
            yield
        finally:
            for key, value in saved.items():
                setattr(config, key, value)
            if glue is not None:
                llm.prepare_inputs_for_generation = glue

    def chat(self, turns: list[Turn], options: GenerateOptions) -> ChatResult:
        if options.generate_audio:
            self._require_unified("returns no audio from chat")
        msgs = [{"role": t.role, "content": model_content(t)} for t in turns]
        voice = options.voice if options.voice is not None else load_reference_voice(options.voice_path)
        if options.generate_audio:
            voice = self.default_voice if voice is None else voice
            if voice is None:
                raise RuntimeError("speech needs a reference voice: none in the request, no audio.ref_audio_path and "
                                   f"no {DEFAULT_VOICE_IN_MODEL} in the model directory")
            if options.tts_mode != "default" and not any(m["role"] == "system" for m in msgs):
                prompt_voice = voice if options.voice_prompt_max_ms is None else \
                    voice[: options.voice_prompt_max_ms * INPUT_SAMPLE_RATE // 1000]
                msgs.insert(0, voice_system_turn(prompt_voice, options.language))
        with self.lock, self._chat_decoding():
            self._set_mode("chat")
            _seed(options)
            result = self.model.chat(
                msgs=msgs, do_sample=samples(options), max_new_tokens=options.max_new_tokens, stream=False,
                use_tts_template=options.use_tts_template or options.generate_audio,
                generate_audio=options.generate_audio, tts_ref_audio=voice if options.generate_audio else None,
                omni_mode=options.omni_mode, enable_thinking=options.enable_thinking, return_prompt=True,
                max_slice_nums=options.max_slice_nums, **sampling_kwargs(options), **self._chat_extras(options),
            )
            stats = dict(getattr(self.model, "_last_chat_token_stats", None) or {})
        # The unified class returns (answer, prompt, waveform); the Hugging Face style one (answer, prompt).
        answer, prompt, waveform = (tuple(result) + (None,))[:3]
        if options.generate_audio and waveform is None:
            # The model's chat catches its TTS's exceptions and returns no waveform.
            raise RuntimeError("the model produced no speech for this reply (its TTS step failed; the worker log has "
                               "the model's traceback)")
        text = answer or ""
        return ChatResult(text=text, audio=to_numpy(waveform), prompt=prompt,
                          input_tokens=int(stats.get("input_tokens") or self._count_tokens(prompt or "")),
                          generated_tokens=int(stats.get("generated_tokens") or self._count_tokens(text)))

    # -- streaming --
    def stream_reset(self) -> None:
        with self.lock:
            self._set_mode("streaming")
            self.model.reset_session(reset_token2wav_cache=False)

    def stream_prefill(self, turns: list[Turn], options: GenerateOptions) -> int:
        with self.lock:
            self._set_mode("streaming")
            if options.voice is not None and self.unified:
                self._cache_voice(options.voice)
            for index, turn in enumerate(turns):
                # A turn arrives whole (a VAD segment, a typed message): not as a live 1 s stream.
                self.model.streaming_prefill(
                    session_id=STREAMING_SESSION, msgs=[{"role": turn.role, "content": model_content(turn)}],
                    omni_mode=options.omni_mode, max_slice_nums=options.max_slice_nums,
                    use_tts_template=options.use_tts_template, enable_thinking=options.enable_thinking,
                    is_last_chunk=index == len(turns) - 1, stream_input=False,
                )
            return self.llm_cache_length()

    def stream_generate(self, options: GenerateOptions, stop: "threading.Event | _AnyOf") -> Iterator[Piece]:
        """Blocking iterator over the reply; holds the model lock until it ends or `stop` is set."""
        if options.generate_audio:
            self._require_unified("does not stream audio")
        with self.lock:
            self._set_mode("streaming")
            if options.generate_audio and self.model.token2wav_cache is None:
                if self.default_voice is None:
                    raise RuntimeError("speech needs a reference voice and none is configured")
                self._cache_voice(self.default_voice)
            _seed(options)
            sampling = sampling_kwargs(options)
            sampling.pop("num_beams")
            items = self.model.streaming_generate(
                session_id=STREAMING_SESSION, generate_audio=options.generate_audio, do_sample=samples(options),
                max_new_tokens=options.max_new_tokens, enable_thinking=options.enable_thinking,
                use_tts_template=options.use_tts_template or options.generate_audio,
                length_penalty=options.length_penalty, **sampling,
            )
            try:
                for item in items:
                    if stop.is_set():
                        break
                    piece = self._piece(item, options.generate_audio)
                    if piece is not None:
                        yield piece
            finally:
                items.close()

    def _piece(self, item: Any, with_audio: bool) -> Piece | None:
        """streaming_generate yields (waveform [1, N], text) with audio, (text, finished) without."""
        if with_audio:
            waveform, text = item
            audio = to_numpy(waveform)
            text = text or ""
            if not text and (audio is None or not audio.size):
                return None
            return Piece(text=text, audio=audio, tokens=self._count_tokens(text))
        text = item[0] or ""
        return Piece(text=text, tokens=self._count_tokens(text)) if text else None

    def _cache_voice(self, voice: np.ndarray) -> None:
        """Prime the vocoder's stream cache with a voice (seconds on a CPU: skipped when it holds it)."""
        if self.voice_cached != id(voice) or self.model.token2wav_cache is None:
            self.model.init_token2wav_cache(prompt_speech_16k=voice)
            self.voice_cached = id(voice)

    # -- duplex --
    def duplex_prepare(self, setup: DuplexSetup) -> int:
        self._require_unified("has no full-duplex mode")
        self.duplex_config = setup.config
        llm_voice = setup.ref_audio if setup.ref_audio is not None else load_reference_voice(setup.ref_audio_path)
        with self.lock:
            self._set_mode("duplex")
            duplex = self.model.duplex
            self._configure_duplex(duplex, self.duplex_config)
            duplex.prepare(
                prefix_system_prompt=DUPLEX_PROMPT_PREFIX.format(prompt=setup.system_prompt),
                suffix_system_prompt=DUPLEX_PROMPT_SUFFIX,
                ref_audio=llm_voice if llm_voice is not None else self.default_voice,
                prompt_wav_path=self._duplex_voice_file(setup),
            )
            return int(duplex.decoder.get_cache_length())

    def _configure_duplex(self, duplex: Any, config: DuplexConfig) -> None:
        """The session's settings that live on the duplex capability rather than in each call."""
        import torch

        duplex.generate_audio = config.generate_audio
        duplex.ls_mode = config.ls_mode
        duplex.force_listen_count = config.force_listen_count
        duplex.max_new_speak_tokens_per_chunk = config.max_new_speak_tokens_per_chunk
        duplex.tts_temperature = torch.tensor([config.tts_temperature], dtype=torch.float, device=duplex.device)
        duplex.CHUNK_MS = self.model.CHUNK_MS = config.chunk_ms

    def _duplex_voice_file(self, setup: DuplexSetup) -> str | None:
        """The vocoder reads its voice from a file: the request's voice is written to one."""
        self._drop_voice_file()
        voice = setup.tts_ref_audio if setup.tts_ref_audio is not None else setup.ref_audio
        if voice is None:
            return setup.ref_audio_path or self.default_voice_path
        import soundfile

        handle, path = tempfile.mkstemp(suffix=".wav", prefix="omnikube-voice-")
        os.close(handle)
        soundfile.write(path, voice, INPUT_SAMPLE_RATE)
        self.duplex_voice_file = path
        return path

    def _drop_voice_file(self) -> None:
        if self.duplex_voice_file:
            Path(self.duplex_voice_file).unlink(missing_ok=True)
            self.duplex_voice_file = None

    def duplex_step(self, step: DuplexInput) -> DuplexOutput:
        config = self.duplex_config
        with self.lock:
            duplex = self.model.duplex
            duplex.streaming_prefill(audio_waveform=step.audio, frame_list=step.frames or None,
                                     max_slice_nums=step.max_slice_nums)
            result = duplex.streaming_generate(force_listen_override=step.force_listen,
                                               **{key: getattr(config, key) for key in DUPLEX_STEP_KEYS})
        speaking = not result.get("is_listen", True)
        # A listening step's waveform is a second of silence the model fills in; nothing to send.
        audio = to_numpy(result.get("audio_waveform")) if speaking and config.generate_audio else None
        return DuplexOutput(
            is_listen=not speaking, text=result.get("text") or "", audio=audio,
            end_of_turn=bool(result.get("end_of_turn", False)), n_tokens=result.get("n_tokens"),
            n_tts_tokens=result.get("n_tts_tokens"),
            vision_slices=len(step.frames) * step.max_slice_nums if step.frames else 0,
            costs_ms={f"{key}_ms": float(result[key]) * 1000.0 for key in _COSTS if result.get(key)},
        )

    def duplex_finalize(self) -> None:
        with self.lock:
            if self.mode == "duplex" and self.model.duplex.needs_finalize:
                self.model.duplex.finalize_unit()

    def duplex_close(self) -> None:
        """Stop the duplex session and free its caches (about 1.5 GB on the GPU)."""
        with self.lock:
            duplex = getattr(self.model, "duplex", None)
            if duplex is not None:
                duplex.set_session_stop()
                duplex._reset_streaming_state()
                duplex.decoder.reset()
            self.model.reset_session(reset_token2wav_cache=True)
            self.voice_cached = None
            self._drop_voice_file()
        gc.collect()
        _empty_cuda_cache()

    def clear_cache(self) -> None:
        with self.lock:
            self.model.reset_session(reset_token2wav_cache=False)

    # -- bookkeeping --
    def kv_cache_length(self) -> int:
        if self.mode == "duplex":
            return int(self.model.duplex.decoder.get_cache_length())
        return self.llm_cache_length()

    def llm_cache_length(self) -> int:
        return int(self.model._get_kv_cache_length())

    def _set_mode(self, mode: str) -> None:
        """The model's own mode switch (a flag flip on shared weights that drops the previous mode's
        session state), timed and exported. The `hf` class has a single mode."""
        if mode == self.mode:
            return
        if self.modes is not None:
            started = time.perf_counter()
            self.model.set_mode(self.modes[mode.upper()])
            self.last_mode_switch_s = time.perf_counter() - started
            metrics.MODE_SWITCH.labels(mode).observe(self.last_mode_switch_s)
            self.voice_cached = None  # the switch dropped the vocoder's stream cache
        self.mode = mode

    def _count_tokens(self, text: str) -> int:
        tokenizer = self._tokenizer()
        if not text:
            return 0
        return len(tokenizer.encode(text, add_special_tokens=False)) if tokenizer is not None else len(text.split())


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the backend ---------------------------------------------------------------------------------

class MiniCPMoBackend(Backend):
    name = "minicpmo"
    simulated = False

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.calls: ModelCalls | None = None
        self.override: OverrideReport | None = None
        self.device: str | None = None

    def load(self) -> None:
        try:
            import torch
        except ModuleNotFoundError as exc:
            raise RuntimeError("the minicpmo backend needs torch and the model stack, which this worker image lacks "
                               "(the CPU image, without torch, runs backend.type simulated only)") from exc

        from .model_code import import_model_code
        from .model_device import adapt_model_utils, resolve_device

        s = self.settings
        started = time.monotonic()
        directory = model_directory(s.model_path)
        self.device = resolve_device(s.device)
        adapt_model_utils(self.device)
        code = import_model_code(directory)
        attn = resolve_attn_implementation(s.attn_implementation)
        if code.layout == "unified":
            require_vocoder(s.chat_vocoder)
        config = apply_attention(code.config_class.from_pretrained(str(directory)), attn)
        # Quantized checkpoints (AWQ, GPTQ) keep their own dtypes; everything else runs in bf16.
        quantized = getattr(config, "quantization_config", None) is not None
        model = code.model_class.from_pretrained(str(directory), config=config, attn_implementation=attn,
                                                 torch_dtype="auto" if quantized else torch.bfloat16)
        if s.pt_path:
            self.override = apply_weight_override(model, s.pt_path)
        model = model.to(self.device).eval()
        modes = None
        if code.layout == "unified":
            model.init_unified(device=self.device, chat_vocoder=s.chat_vocoder,
                               duplex_config=_duplex_defaults(DuplexConfig()))
            modes = code.modeling.ProcessorMode
        self.calls = ModelCalls(model, code.layout, modes, default_voice_path(s.ref_audio_path, directory),
                                chat_cache=s.chat_cache)
        log.info("MiniCPM-o (%s class) loaded from %s on %s in %.1f s (attn %s, audio encoder sdpa)", code.layout,
                 directory, self.device, time.monotonic() - started, attn)
        if s.compile and code.layout == "unified":
            self._compile(model)
        if s.chat_cache == ChatCache.static and self.device.startswith("cuda"):
            self._warm_chat()

    def default_voice(self) -> tuple[str, np.ndarray] | None:
        calls = self.calls
        if calls is None or calls.default_voice is None or not calls.default_voice_path:
            return None
        return Path(calls.default_voice_path).name, calls.default_voice

    def _warm_chat(self) -> None:
        """One short reply, so transformers compiles the static-cache decoding step now rather than
        in the first user's reply."""
        started = time.monotonic()
        assert self.calls is not None
        self.calls.chat([Turn("user", ["warm-up"])], GenerateOptions(max_new_tokens=3, do_sample=False))
        log.info("chat decoding step compiled in %.1f s", time.monotonic() - started)

    def _compile(self, model: Any) -> None:
        """The model's own torch.compile of its heavy sub-modules, then one pass of each mode so the
        first user does not pay the compilation (about a minute on a GPU)."""
        started = time.monotonic()
        model.apply_torch_compile(mode="default", dynamic=True)
        assert self.calls is not None
        self.calls.duplex_prepare(DuplexSetup(system_prompt="warm-up"))
        self.calls.duplex_step(DuplexInput(audio=np.zeros(INPUT_SAMPLE_RATE, dtype=np.float32)))
        self.calls.duplex_finalize()
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


def _duplex_defaults(config: DuplexConfig) -> dict[str, Any]:
    """The capability is built able to speak (its TTS sampling state exists only then); each
    session then sets what it wants (`_configure_duplex`)."""
    values = config.model_dump(include={"ls_mode", "max_new_speak_tokens_per_chunk", "temperature", "top_k", "top_p",
                                        "text_repetition_penalty", "text_repetition_window_size", "listen_prob_scale",
                                        "force_listen_count", "tts_temperature", "chunk_ms"})
    return {**values, "generate_audio": True}
