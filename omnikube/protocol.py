"""The worker's wire protocol: states, task types and message models.

Shared by the worker (which speaks it) and the gateway (which routes and relays it). Field names and
`type` strings are the original demo service's, verbatim.
"""

from __future__ import annotations

import json
from base64 import b64encode
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class WorkerStatus(str, Enum):
    """`worker_status` in `/health`."""

    loading = "loading"
    idle = "idle"
    busy_chat = "busy_chat"
    busy_half_duplex = "busy_half_duplex"
    busy_streaming = "busy_streaming"  # legacy /ws/streaming
    duplex_active = "duplex_active"
    duplex_paused = "duplex_paused"
    error = "error"

    @property
    def busy(self) -> bool:
        return self not in (WorkerStatus.idle, WorkerStatus.loading, WorkerStatus.error)


class TaskType(str, Enum):
    """Kinds of work the gateway queues; each has an ETA baseline `service.eta_<value>_s`."""

    chat = "chat"
    streaming = "streaming"
    half_duplex = "half_duplex"
    audio_duplex = "audio_duplex"
    omni_duplex = "omni_duplex"


# Session ids starting with this prefix are audio duplex; every other duplex session is omni.
AUDIO_DUPLEX_PREFIX = "adx_"

INPUT_SAMPLE_RATE = 16_000   # client audio: float32 mono, base64
OUTPUT_SAMPLE_RATE = 24_000  # model audio: float32 mono, base64 (POST /chat returns 16-bit WAV)
WS_MAX_MESSAGE_BYTES = 128 * 1024 * 1024

# --------------------------------------------------------------------------------------------------
# Wire message models. Unknown fields are ignored (as the original's pydantic schemas do), so a
# newer client never breaks an older worker; wrong types and out-of-range values are rejected.
# --------------------------------------------------------------------------------------------------

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
PAUSE_TIMEOUT_CLOSE_REASON = "Pause timeout"
CLOSE_TRY_AGAIN_LATER = 1013  # WebSocket close code for "not ready" / "busy"
# The `error` of a worker's /ws/chat that another session holds (the request frame comes before
# admission there, so it cannot refuse the handshake); the gateway moves on when it reads it.
WORKER_BUSY_ERROR = "Worker busy"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class NotAJsonObject(ValueError):
    """A frame or body that is not one JSON object; the message is meant for the sender."""


def loads_object(text: str | bytes) -> dict[str, Any]:
    """Parse one JSON object. Nesting deeper than Python's recursion limit makes `json` raise
    RecursionError (a RuntimeError, so handlers that catch ValueError let it kill the session):
    it is the sender's mistake like any other malformed frame, and is reported as one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotAJsonObject(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise NotAJsonObject(f"not UTF-8 text: {exc}") from None
    except RecursionError:
        raise NotAJsonObject("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise NotAJsonObject("expected a JSON object")
    return data


# ---- content items and chat (POST /chat, WS /ws/chat) ------------------------------------------

class TextItem(_Wire):
    type: Literal["text"]
    text: str


class ImageItem(_Wire):
    type: Literal["image"]
    data: str = Field(description="base64 of an image file (PNG/JPEG/GIF/WebP)")


class AudioItem(_Wire):
    type: Literal["audio"]
    data: str = Field(description="base64 raw float32 LE mono PCM at 16 kHz")
    sample_rate: Literal[16000] = INPUT_SAMPLE_RATE


class VideoItem(_Wire):
    type: Literal["video"]
    data: str = Field(description="base64 of a video file")
    stack_frames: int = Field(1, ge=1)


ContentItem = Annotated[Union[TextItem, ImageItem, AudioItem, VideoItem], Field(discriminator="type")]


class Message(_Wire):
    role: Literal["system", "user", "assistant"]
    content: Union[str, list[ContentItem]]


class Sampling(_Wire):
    """How the next token is picked. The original validated these and then let the model's defaults
    apply; ours reach the model (`seed` makes a sampled reply repeatable on the same worker)."""

    do_sample: bool = True
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.8, ge=0, le=1)
    top_k: int = Field(100, ge=0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


class GenerationConfig(Sampling):
    max_new_tokens: int = Field(512, ge=1, le=4096)
    min_new_tokens: int = Field(0, ge=0)
    length_penalty: float = Field(1.1, ge=0.1, le=5.0)
    max_inp_length: int = Field(8192, ge=1)


class TTSSamplingParams(_Wire):
    top_p: float = Field(0.85, ge=0, le=1)
    min_p: float = Field(0.01, ge=0, le=1)
    top_k: int = Field(25, ge=0)
    repetition_penalty: float = Field(1.05, ge=1.0)
    temperature: float = Field(0.8, ge=0, le=2)
    win_size: int = Field(16, ge=1)
    tau_r: float = Field(0.1, ge=0)


class TTSConfig(_Wire):
    enabled: bool = False
    mode: Literal["default", "audio_assistant", "omni", "audio_roleplay", "voice_cloning"] = "audio_assistant"
    ref_audio_path: str | None = None
    ref_audio_data: str | None = None
    ref_audio_max_ms: int | None = Field(None, ge=1000)
    output_path: str | None = None
    language: Literal["en", "zh"] = "en"
    sampling: TTSSamplingParams = Field(default_factory=TTSSamplingParams)


class ImageConfig(_Wire):
    max_slice_nums: int | None = Field(None, ge=1, le=16)
    use_image_id: bool = False


class ChatRequest(_Wire):
    """Body of `POST /chat`: the whole history, every call (stateless)."""

    messages: list[Message] = Field(min_length=1)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    use_tts_template: bool = False
    omni_mode: bool = False
    enable_thinking: bool = False
    return_prompt: bool = False


class TokenStats(_Wire):
    cached_tokens: int = 0
    input_tokens: int = 0
    generated_tokens: int = 0
    total_tokens: int = 0


class WorkerInfo(_Wire):
    """Extra fields (not in the original) on every session-level answer: which backend answered."""

    backend: str
    simulated: bool


class ChatResponse(WorkerInfo):
    text: str = ""
    audio_path: str | None = None
    audio_data: str | None = Field(None, description="base64 of a WAV file: mono, 24 kHz, 16-bit PCM")
    audio_sample_rate: int = OUTPUT_SAMPLE_RATE
    tokens_generated: int | None = None
    duration_ms: float | None = None
    prompt: str | None = None
    token_stats: TokenStats | None = None
    recording_session_id: str | None = None
    error: str | None = None
    success: bool = True


class WsChatGeneration(Sampling):
    max_new_tokens: int = Field(256, ge=1, le=4096)
    length_penalty: float = Field(1.1, ge=0.1, le=5.0)


class WsChatTTS(_Wire):
    enabled: bool = False
    ref_audio_data: str | None = None


class WsChatRequest(_Wire):
    """The one request frame of `WS /ws/chat`. Content items are parsed leniently by the worker."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    streaming: bool = True
    generation: WsChatGeneration = Field(default_factory=WsChatGeneration)
    image: ImageConfig = Field(default_factory=ImageConfig)
    tts: WsChatTTS = Field(default_factory=WsChatTTS)
    use_tts_template: bool = False
    omni_mode: bool = False
    enable_thinking: bool = False


class WorkerHealthResponse(_Wire):
    """`GET /health` of a worker: written by the worker, read by the gateway's health probes."""

    status: Literal["healthy", "error", "initializing"]
    worker_status: WorkerStatus
    gpu_id: int
    model_loaded: bool
    current_session_id: str | None = None
    total_requests: int = 0
    avg_inference_time_ms: float = 0.0
    kv_cache_length: int = 0
    # Omnikube additions.
    backend: str
    simulated: bool
    worker_index: int = 0
    # Measured over this worker's chats (worker/pace.py): a chat takes about
    # generation_overhead_ms + ms_per_token * generated tokens. None before its first chat.
    generation_overhead_ms: float | None = Field(None, ge=0, allow_inf_nan=False)
    ms_per_token: float | None = Field(None, ge=0, allow_inf_nan=False)


class DefaultRefAudio(_Wire):
    """A default voice as the web UI reads it: the gateway's `GET /api/default_ref_audio`, and a
    worker's `GET /default_ref_audio` (the voice its replies get when a request names none)."""

    name: str
    duration: float          # seconds, one decimal
    sample_rate: int
    samples: int
    base64: str              # raw little-endian float32 mono at sample_rate

    @classmethod
    def from_samples(cls, name: str, samples: Any, sample_rate: int = INPUT_SAMPLE_RATE) -> "DefaultRefAudio":
        """From a numpy array of mono samples."""
        return cls(name=name, duration=round(samples.size / sample_rate, 1), sample_rate=sample_rate,
                   samples=int(samples.size), base64=b64encode(samples.astype("<f4").tobytes()).decode())


# ---- full duplex (WS /ws/duplex) ----------------------------------------------------------------

class DuplexConfig(_Wire):
    generate_audio: bool = True
    ls_mode: str = "explicit"
    force_listen_count: int = Field(3, ge=0)
    max_new_speak_tokens_per_chunk: int = Field(20, ge=1)
    decode_mode: Literal["sampling", "greedy"] = "sampling"
    temperature: float = Field(0.7, ge=0, le=2)
    top_k: int = Field(20, ge=0)
    top_p: float = Field(0.8, ge=0, le=1)
    text_repetition_penalty: float = Field(1.05, ge=1)
    text_repetition_window_size: int = Field(512, ge=1)
    length_penalty: float = Field(1.1, ge=0.1, le=5)
    listen_prob_scale: float = Field(1.0, ge=0)
    listen_top_k: int | None = None
    tts_temperature: float = Field(0.8, ge=0, le=2)
    chunk_ms: int = Field(1000, ge=100)
    sample_rate: Literal[16000] = INPUT_SAMPLE_RATE


class DuplexPrepare(_Wire):
    type: Literal["prepare"] = "prepare"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    ref_audio_path: str | None = None
    ref_audio_base64: str | None = None
    tts_ref_audio_base64: str | None = None
    # Absent: the defaults. (The original kept the worker's previous session's config, so one
    # client's settings, audio off say, reached the next client's session.)
    config: DuplexConfig = Field(default_factory=DuplexConfig)
    deferred_finalize: bool = True
    max_slice_nums: int | None = Field(None, ge=1, le=16)


class DuplexAudioChunk(_Wire):
    type: Literal["audio_chunk"] = "audio_chunk"
    audio_base64: str | None = None
    frame_base64_list: list[str] | None = None
    force_listen: bool = False
    max_slice_nums: int | None = Field(None, ge=1, le=16)


class DuplexPause(_Wire):
    type: Literal["pause"] = "pause"
    timeout: float | None = Field(None, gt=0)


class DuplexResult(_Wire):
    type: Literal["result"] = "result"
    is_listen: bool
    text: str = ""
    audio_data: str | None = None
    end_of_turn: bool = False
    current_time: int = 0
    cost_llm_ms: float | None = None
    cost_tts_prep_ms: float | None = None
    cost_tts_ms: float | None = None
    cost_token2wav_ms: float | None = None
    cost_all_ms: float | None = None
    n_tokens: int | None = None
    n_tts_tokens: int | None = None
    server_send_ts: float
    wall_clock_ms: float
    kv_cache_length: int = 0
    vision_slices: int = 0
    vision_tokens: int = 0


# ---- half duplex (WS /ws/half_duplex) -----------------------------------------------------------

class VadConfig(_Wire):
    threshold: float = Field(0.7, ge=0, le=1)
    min_speech_duration_ms: int = Field(128, ge=0)
    min_silence_duration_ms: int = Field(500, ge=0)
    speech_pad_ms: int = Field(30, ge=0)


class HalfDuplexGeneration(_Wire):
    max_new_tokens: int = Field(256, ge=1, le=4096)
    length_penalty: float = Field(1.1, ge=0.1, le=5.0)
    temperature: float = Field(0.7, ge=0, le=2)


class HalfDuplexTTS(_Wire):
    enabled: bool = True


class HalfDuplexSessionConfig(_Wire):
    timeout_s: float = Field(300, gt=0)


class HalfDuplexConfig(_Wire):
    vad: VadConfig = Field(default_factory=VadConfig)
    generation: HalfDuplexGeneration = Field(default_factory=HalfDuplexGeneration)
    tts: HalfDuplexTTS = Field(default_factory=HalfDuplexTTS)
    session: HalfDuplexSessionConfig = Field(default_factory=HalfDuplexSessionConfig)


class HalfDuplexPrepare(_Wire):
    type: Literal["prepare"] = "prepare"
    system_content: list[dict[str, Any]] = Field(default_factory=list)
    config: HalfDuplexConfig = Field(default_factory=HalfDuplexConfig)


class HalfDuplexAudioChunk(_Wire):
    type: Literal["audio_chunk"] = "audio_chunk"
    audio_base64: str | None = None


class StreamChunk(_Wire):
    """`chunk` of /ws/half_duplex and legacy /ws/streaming."""

    type: Literal["chunk"] = "chunk"
    chunk_index: int
    text_delta: str | None = None
    audio_data: str | None = None
    audio_sample_rate: int = OUTPUT_SAMPLE_RATE
    is_final: bool = False
    duration_ms: float | None = None


# ---- legacy streaming (WS /ws/streaming) --------------------------------------------------------

class StreamingPrefill(_Wire):
    type: Literal["prefill"] = "prefill"
    session_id: str | None = None
    messages: list[dict[str, Any]] = Field(default_factory=list)
    is_last_chunk: bool = True
    clear_kv_cache: bool = False
    tts_ref_audio_base64: str | None = None
    ref_audio_base64: str | None = None
    max_slice_nums: int | None = Field(None, ge=1, le=16)


class StreamingGenerate(_Wire):
    type: Literal["generate"] = "generate"
    session_id: str | None = None
    generate_audio: bool = True
    max_new_tokens: int = Field(256, ge=1, le=4096)
    length_penalty: float = Field(1.1, ge=0.1, le=5.0)


# ---- gateway to client: queue frames, errors, refusals ------------------------------------------

class QueueFrame(_Wire):
    """Where a waiting session stands. `/ws/*` sends it as `queued` (first, with the ticket id) and
    `queue_update`; `/v1/realtime` as `session.queued` / `session.queue_update`; the SSE stream of
    `/v1/chat/completions` as a comment. `estimated_wait_s` is the one name of the ETA everywhere
    (POST /api/chat's answer alone says `estimated_queue_wait_s`, as the original's clients read it)."""

    type: str
    position: int = Field(ge=1)
    estimated_wait_s: float = Field(ge=0)
    queue_length: int = Field(ge=0)
    ticket_id: str | None = None


class ErrorFrame(_Wire):
    """`error` of the worker's and the gateway's `/ws/*` routes. `code` is an Omnikube addition,
    sent where a client can act on it (and left out otherwise, as the original's frames have none)."""

    type: Literal["error"] = "error"
    error: str
    code: Literal["worker_lost", "gateway_stopping", "bad_frame"] | None = None


class RefusalReason(str, Enum):
    """Why a request got no worker. The values are the gateway's metric outcomes."""

    queue_full = "queue_full"
    queue_timeout = "queue_timeout"
    cancelled = "cancelled"
    no_worker = "worker_failed"


class Refusal(_Wire):
    """A request the gateway could not serve, before any worker answered: one mapping from the
    queue's outcomes, rendered by each protocol as its own error (frame, event or HTTP status)."""

    reason: RefusalReason
    message: str
    retry_after_s: float | None = None
