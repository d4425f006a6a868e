"""Every Prometheus metric the gateway exports, declared once.

Names follow the Prometheus conventions: `omnikube_gateway_` prefix, base units (seconds),
`_total` counters. Every label has a small fixed set of values, all pre-created below so that
series exist (at 0) before the first event. Other gateway modules import the objects from here;
a new metric is added here, never declared elsewhere.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from omnikube.metric_names import GATEWAY_ETA_SECONDS, GATEWAY_QUEUE_LENGTH
from omnikube.protocol import TaskType

TASK_TYPES = [t.value for t in TaskType]
# How a request or session ended.
OUTCOMES = ["ok", "worker_error", "worker_failed", "client_left", "queue_full", "queue_timeout", "cancelled", "bad_request"]
WORKER_STATES = ["idle", "busy", "duplex", "loading", "error", "offline", "draining", "not_ready"]
DISCOVERY_EVENTS = ["added", "modified", "deleted", "relisted"]
WATCH_RESTART_REASONS = ["expired", "error", "closed"]

QUEUE_LENGTH = Gauge(GATEWAY_QUEUE_LENGTH, "Tickets waiting for a worker.")
QUEUE_WAIT = Histogram(
    "omnikube_gateway_queue_wait_seconds",
    "Time from arrival to worker assignment (0 for immediate dispatch).",
    ["task_type"],
    buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
ETA = Gauge(GATEWAY_ETA_SECONDS, "Estimated wait a new request of this type would have now.", ["task_type"])
WORKERS = Gauge("omnikube_gateway_workers", "Known workers by state.", ["state"])
ACTIVE_SESSIONS = Gauge("omnikube_gateway_active_sessions", "Sessions holding a worker, by task type.", ["task_type"])
REQUESTS = Counter("omnikube_gateway_requests_total", "Requests and sessions by task type and outcome.", ["task_type", "outcome"])
REQUEST_DURATION = Histogram(
    "omnikube_gateway_request_duration_seconds",
    "Time a request or session held its worker, by task type.",
    ["task_type"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
DISCOVERY_EVENTS_TOTAL = Counter("omnikube_gateway_discovery_events_total", "Worker pod events seen by discovery.", ["event"])
WATCH_RESTARTS = Counter("omnikube_gateway_watch_restarts_total", "Times the pod watch had to be re-established.", ["reason"])
WORKER_FAILURES = Counter("omnikube_gateway_worker_failures_total", "Connections to a worker that failed and took it out of rotation.")
# Client APIs: /v1/realtime sessions and /v1/chat/completions, /v1/models requests.
CLIENT_APIS = ["realtime", "chat_completions", "models"]
CLIENT_API_OUTCOMES = ["ok", "client_left", "bad_request", "unauthorized", "queue_full", "queue_timeout", "cancelled",
                       "worker_error", "worker_failed"]
CLIENT_API = Counter("omnikube_gateway_client_api_total", "Client API sessions and requests by API and outcome.", ["api", "outcome"])

for _task_type in TASK_TYPES:
    QUEUE_WAIT.labels(_task_type)
    ETA.labels(_task_type)
    ACTIVE_SESSIONS.labels(_task_type)
    REQUEST_DURATION.labels(_task_type)
    for _outcome in OUTCOMES:
        REQUESTS.labels(_task_type, _outcome)
for _api in CLIENT_APIS:
    for _outcome in CLIENT_API_OUTCOMES:
        CLIENT_API.labels(_api, _outcome)
for _state in WORKER_STATES:
    WORKERS.labels(_state)
for _event in DISCOVERY_EVENTS:
    DISCOVERY_EVENTS_TOTAL.labels(_event)
for _reason in WATCH_RESTART_REASONS:
    WATCH_RESTARTS.labels(_reason)


def worker_state_label(status: str, *, ready: bool, draining: bool) -> str:
    """Fold a worker's status into the bounded `state` label."""
    if not ready:
        return "not_ready"
    if draining:
        return "draining"
    if status.startswith("busy"):
        return "busy"
    if status.startswith("duplex"):
        return "duplex"
    return status if status in WORKER_STATES else "error"
