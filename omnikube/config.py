"""The seed's `config.json`, as one pydantic model shared by worker, gateway and operator.

Precedence everywhere is CLI > config.json > these defaults. Outside a cluster the file sits in the
working directory (or wherever `--config` / `OMNIKUBE_CONFIG` points); inside a cluster the operator
renders the OmniDeployment spec into the same format and mounts it from a ConfigMap.
Unknown keys are ignored, as in the original, so files written for it load unchanged.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_CONFIG_FILE = "config.json"
CONFIG_ENV = "OMNIKUBE_CONFIG"
DEFAULT_MODEL_PATH = "openbmb/MiniCPM-o-4_5"
DEFAULT_REF_AUDIO = "assets/ref_audio/ref_minicpm_signature.wav"


class AttnImplementation(str, Enum):
    auto = "auto"
    flash_attention_2 = "flash_attention_2"
    sdpa = "sdpa"
    eager = "eager"


class ChatCache(str, Enum):
    dynamic = "dynamic"
    static = "static"


class ChatVocoder(str, Enum):
    token2wav = "token2wav"
    cosyvoice2 = "cosyvoice2"


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", use_enum_values=True, validate_assignment=True)


class ModelSection(_Section):
    model_path: str = Field(DEFAULT_MODEL_PATH, min_length=1, description="Hugging Face format model directory or Hub ID.")
    pt_path: str | None = Field(None, description="Optional .pt weight override applied after loading.")
    attn_implementation: AttnImplementation = Field(
        AttnImplementation.auto,
        description="auto picks flash_attention_2 when flash-attn imports, else sdpa. The audio encoder always uses sdpa.",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
                        description="Where the model runs: auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N.")
    chat_cache: ChatCache = Field(
        ChatCache.dynamic,
        description="KV cache of turn-based chat replies: dynamic (grows per token), or static (preallocated, "
                    "so on a GPU each decoding step is one torch.compile'd graph; the first reply compiles it).",
    )


class AudioSection(_Section):
    ref_audio_path: str | None = Field(DEFAULT_REF_AUDIO, description="Default TTS reference voice (WAV).")
    playback_delay_ms: int = Field(200, ge=0, le=2000, description="Browser playback delay; higher is smoother, adds latency.")
    chat_vocoder: ChatVocoder = Field(ChatVocoder.token2wav, description="Vocoder used for turn-based speech.")


class ServiceSection(_Section):
    gateway_port: int = Field(8006, ge=1, le=65535, description="Gateway listening port.")
    worker_base_port: int = Field(22400, ge=1, le=65535, description="Worker N listens on worker_base_port + N.")
    max_queue_size: int = Field(1000, ge=1, description="Most requests that may wait in the queue.")
    request_timeout: float = Field(300.0, gt=0, description="Seconds a request may take, queueing excluded.")
    compile: bool = Field(False, description="torch.compile the model (about 60 s more at first inference).")
    data_dir: str = Field("data", min_length=1, description="Recordings and reference-audio root.")
    eta_chat_s: float = Field(15.0, gt=0, description="Baseline duration of a chat task (s).")
    eta_streaming_s: float = Field(20.0, gt=0, description="Baseline duration of a streaming chat task (s).")
    eta_half_duplex_s: float = Field(180.0, gt=0, description="Baseline duration of a half-duplex session (s).")
    eta_audio_duplex_s: float = Field(120.0, gt=0, description="Baseline duration of an audio full-duplex session (s).")
    eta_omni_duplex_s: float = Field(90.0, gt=0, description="Baseline duration of an omni full-duplex session (s).")
    eta_ema_alpha: float = Field(0.3, gt=0, le=1, description="EMA smoothing of observed task durations.")
    eta_ema_min_samples: int = Field(3, ge=1, description="Samples needed before the EMA replaces the baseline.")


class DuplexSection(_Section):
    pause_timeout: float = Field(60.0, gt=0, description="Seconds a paused duplex session may stay paused before the worker is released.")


class RecordingSection(_Section):
    enabled: bool = Field(True, description="Record sessions under data_dir/sessions.")
    session_retention_days: int = Field(-1, ge=-1, description="Delete recordings older than this; -1 keeps them.")
    max_storage_gb: float = Field(-1, ge=-1, description="Cap on recording storage; -1 means no cap.")


class RealtimeSection(_Section):
    """Limits of `/v1/realtime` sessions (not in the seed's file; the Realtime protocol's defaults)."""

    audio_max_session_s: float = Field(600.0, gt=0, description="Longest audio-mode Realtime session (s).")
    video_max_session_s: float = Field(300.0, gt=0, description="Longest video-mode Realtime session (s).")
    max_kv_tokens: int = Field(8192, ge=1, description="Context size at which a Realtime session is closed with context_full.")
    result_timeout_s: float = Field(30.0, gt=0, description="A worker silent this long after a chunk is treated as hung (s).")


class OmniConfig(_Section):
    """The whole `config.json`."""

    model: ModelSection = Field(default_factory=ModelSection)
    audio: AudioSection = Field(default_factory=AudioSection)
    service: ServiceSection = Field(default_factory=ServiceSection)
    duplex: DuplexSection = Field(default_factory=DuplexSection)
    recording: RecordingSection = Field(default_factory=RecordingSection)
    realtime: RealtimeSection = Field(default_factory=RealtimeSection)


class ConfigError(ValueError):
    """The config file exists but cannot be used; the message says which key and why."""


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)


def load_config(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> OmniConfig:
    """Read config.json (missing file = defaults) and apply dotted CLI overrides.

    `overrides` maps "section.key" to a value; None values are skipped so that an unset CLI flag
    falls through to the file. Unlike the original, 0 is a real value, not "unset".
    """
    file = config_path(path)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: top level must be a JSON object")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})[key] = value
    try:
        return OmniConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
