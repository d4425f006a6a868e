"""The worker's resolved settings: CLI > config.json > defaults, plus the simulated backend's knobs.

`WorkerSettings` is plain data built once by the CLI (or by a test) and handed to `create_app`.
The simulated backend's timings and faults also read `OMNIKUBE_SIM_*` environment variables, so a
test or a pod spec can shape a worker without changing its command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from omnikube.config import ChatCache, OmniConfig


@dataclass(frozen=True)
class SimOptions:
    """Timings and faults of the simulated backend. All delays are scaled by `slowdown`."""

    load_s: float = 0.2               # simulated model load time
    prefill_ms: float = 120.0         # prefill delay of every turn / duplex prepare
    tokens_per_s: float = 25.0        # text token rate; 0 = unlimited
    words_per_chunk: int = 4          # tokens per streamed chunk (each chunk carries its audio)
    duplex_step_ms: float = 120.0     # compute time of one duplex step (one input chunk)
    finalize_ms: float = 10.0         # deferred finalize after each duplex step
    fault: str = ""                   # e.g. "crash_after_chunks:3", "hang_after_chunks:1", "slow:4"

    @classmethod
    def zero_delay(cls, **overrides: object) -> "SimOptions":
        """No waiting at all: for benchmarks of everything around the model, and for fast tests."""
        base = dict(load_s=0.0, prefill_ms=0.0, tokens_per_s=0.0, duplex_step_ms=0.0, finalize_ms=0.0)
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "SimOptions":
        """Defaults < OMNIKUBE_SIM_* environment < explicit overrides (None = not given)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if env.get("OMNIKUBE_SIM_ZERO_DELAY", "").lower() in ("1", "true", "yes"):
            values.update(load_s=0.0, prefill_ms=0.0, tokens_per_s=0.0, duplex_step_ms=0.0, finalize_ms=0.0)
        for name, kind in _SIM_FIELDS.items():
            raw = env.get(f"OMNIKUBE_SIM_{name.upper()}")
            if raw not in (None, ""):
                try:
                    values[name] = kind(raw)
                except ValueError as exc:
                    raise ValueError(f"OMNIKUBE_SIM_{name.upper()}={raw!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


_SIM_FIELDS = {"load_s": float, "prefill_ms": float, "tokens_per_s": float, "words_per_chunk": int,
               "duplex_step_ms": float, "finalize_ms": float, "fault": str}


@dataclass(frozen=True)
class WorkerSettings:
    backend: str = "simulated"               # "simulated" | "minicpmo"
    worker_index: int = 0
    gpu_id: int = 0
    host: str = "0.0.0.0"
    port: int = 22400
    model_path: str = "openbmb/MiniCPM-o-4_5"
    pt_path: str | None = None
    ref_audio_path: str | None = None
    attn_implementation: str = "auto"
    device: str = "auto"                    # "auto" | "cpu" | "cuda" | "cuda:N" (model.device)
    chat_vocoder: str = "token2wav"
    compile: bool = False
    chat_cache: ChatCache = ChatCache.dynamic  # model.chat_cache
    pause_timeout: float = 60.0
    busy_grace_s: float = 5.0               # how long a new session waits for a previous one's cleanup
    recording: bool = False                 # write session recordings (config recording.enabled)
    data_dir: str = "data"                  # recordings go to <data_dir>/sessions/<id>/
    sim: SimOptions = field(default_factory=SimOptions)

    @classmethod
    def from_config(cls, config: OmniConfig, **overrides: object) -> "WorkerSettings":
        """Settings from a loaded config; `overrides` (None = unset) are CLI values and win."""
        worker_index = overrides.get("worker_index") or 0
        values: dict[str, object] = dict(
            worker_index=worker_index,
            gpu_id=worker_index,
            port=config.service.worker_base_port + int(worker_index),  # type: ignore[arg-type]
            model_path=config.model.model_path,
            pt_path=config.model.pt_path,
            ref_audio_path=config.audio.ref_audio_path,
            attn_implementation=_value(config.model.attn_implementation),
            device=config.model.device,
            chat_vocoder=_value(config.audio.chat_vocoder),
            compile=config.service.compile,
            chat_cache=ChatCache(_value(config.model.chat_cache)),
            pause_timeout=config.duplex.pause_timeout,
            recording=config.recording.enabled,
            data_dir=config.service.data_dir,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _value(option: object) -> str:
    """An enum's value or the plain string (config defaults stay enum members)."""
    return str(getattr(option, "value", option))
