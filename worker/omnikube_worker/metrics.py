"""Every Prometheus metric of the worker, defined once, in the worker's own registry.

Served on `/metrics`. A registry of its own keeps the worker's series apart from anything else that
lives in the same Python process (tests run gateway and worker side by side).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from omnikube.protocol import WorkerStatus

REGISTRY = CollectorRegistry(auto_describe=True)

SESSION_TYPES = ("chat", "chat_ws", "half_duplex", "audio_duplex", "omni_duplex", "streaming")
OUTCOMES = ("completed", "stopped", "client_left", "error", "timeout", "rejected_busy", "rejected_not_ready")

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

INFO = Gauge("omnikube_worker_info", "Constant 1, labelled with what this worker runs.",
             ["backend", "simulated", "gpu_id"], registry=REGISTRY)
STATE = Gauge("omnikube_worker_state", "1 for the worker's current state, 0 for the others.",
              ["state"], registry=REGISTRY)
SESSIONS = Counter("omnikube_worker_sessions_total", "Requests and sessions by type and outcome.",
                   ["task_type", "outcome"], registry=REGISTRY)
TIME_TO_FIRST_TOKEN = Histogram("omnikube_worker_time_to_first_token_seconds",
                                "From request (or the end of the user's turn) to the first text.",
                                ["task_type"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
TIME_TO_FIRST_AUDIO = Histogram("omnikube_worker_time_to_first_audio_seconds",
                                "From request (or the end of the user's turn) to the first audio.",
                                ["task_type"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
DUPLEX_STEP = Histogram("omnikube_worker_duplex_step_seconds",
                        "Receive-to-result time of one duplex step (real time needs < 1 s).",
                        ["task_type"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
TOKENS = Counter("omnikube_worker_generated_tokens_total", "Text tokens generated.", ["task_type"], registry=REGISTRY)
AUDIO_SECONDS = Counter("omnikube_worker_generated_audio_seconds_total", "Seconds of speech generated.",
                        ["task_type"], registry=REGISTRY)
BAD_INPUT = Counter("omnikube_worker_bad_input_total", "Client messages rejected with an error.",
                    ["task_type"], registry=REGISTRY)
MODE_SWITCH = Histogram("omnikube_worker_mode_switch_seconds",
                        "Time the model took to switch between chat, streaming and duplex mode.", ["mode"],
                        buckets=(1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0), registry=REGISTRY)
MODEL_LOAD = Gauge("omnikube_worker_model_load_seconds", "How long loading the model took.", registry=REGISTRY)

for _state in WorkerStatus:
    STATE.labels(_state.value).set(0)
for _type in SESSION_TYPES:
    for _outcome in OUTCOMES:
        SESSIONS.labels(_type, _outcome)
    TOKENS.labels(_type)
    AUDIO_SECONDS.labels(_type)
    BAD_INPUT.labels(_type)


def set_state(status: WorkerStatus) -> None:
    for state in WorkerStatus:
        STATE.labels(state.value).set(1 if state is status else 0)
