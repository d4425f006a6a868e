"""Status, queue and admin API (gateway.md §4.5, §5.4, §7) plus probes.

Wire-compatible field names. Additions: `/healthz` (process alive) and `/readyz` (discovery has
synced), worker fields `ready` / `draining` / `healthy` / `last_error`, and ETA baselines that are
range-checked (422) and persisted in `<data_dir>/gateway/eta.json`.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from omnikube.protocol import TaskType, WorkerStatus

from .auth import require_admin, require_api_key
from .dispatch import Dispatcher
from .registry import WIRE_LABEL, Worker
from .storage import atomic_write_json, read_limited

router = APIRouter()
public = [Depends(require_api_key)]

TRACE_MAX_BYTES = 5 * 1024 * 1024
TRACE_BODY_LIMIT = 64 * 1024
BUSY = {WorkerStatus.busy_chat.value, WorkerStatus.busy_half_duplex.value, WorkerStatus.busy_streaming.value}
DUPLEX = {WorkerStatus.duplex_active.value, WorkerStatus.duplex_paused.value}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@router.get("/health")
async def health() -> dict:
    return {"status": "healthy", "timestamp": datetime.now().isoformat()}


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    watcher = getattr(state, "watcher", None)
    if watcher is not None and not watcher.synced.is_set():
        return JSONResponse({"status": "not ready", "reason": "worker discovery has not listed pods yet"}, status_code=503)
    routable = sum(1 for w in state.registry if w.ready and not w.draining and w.healthy)
    return JSONResponse({"status": "ready", "workers": len(state.registry), "routable_workers": routable})


def running_tasks(dispatcher: Dispatcher) -> list[dict]:
    now = time.monotonic()
    tasks = []
    for worker, session in dispatcher.running():
        elapsed = now - session.started
        tasks.append({
            "worker_id": worker.worker_id,
            "request_type": WIRE_LABEL[session.task_type],
            "started_at": _iso(session.started_at),
            "elapsed_s": round(elapsed, 1),
            "estimated_remaining_s": round(dispatcher.estimated_remaining(worker, session), 1),
        })
    return tasks


@router.get("/status", dependencies=public)
async def status(request: Request) -> dict:
    dispatcher: Dispatcher = request.app.state.dispatcher
    statuses = [w.status for w in dispatcher.registry]
    return {
        "gateway_healthy": True,
        "total_workers": len(statuses),
        "idle_workers": sum(1 for w in dispatcher.registry if w.available),
        "busy_workers": sum(1 for s in statuses if s in BUSY or s in DUPLEX),
        "duplex_workers": sum(1 for s in statuses if s in DUPLEX),
        "loading_workers": statuses.count(WorkerStatus.loading.value),
        "error_workers": statuses.count(WorkerStatus.error.value),
        "offline_workers": statuses.count("offline"),
        "draining_workers": sum(1 for w in dispatcher.registry if w.draining),
        "queue_length": len(dispatcher.queue),
        "max_queue_size": dispatcher.max_queue_size,
        "running_tasks": running_tasks(dispatcher),
    }


def worker_info(worker: Worker) -> dict:
    session = worker.session
    return {
        "worker_id": worker.worker_id,
        "host": worker.host,
        "port": worker.port,
        "gpu_id": worker.gpu_id,
        "status": worker.status,
        "current_session_id": session.session_id if session else worker.current_session_id,
        "total_requests": worker.total_requests,
        "avg_inference_time_ms": worker.avg_inference_time_ms,
        "last_heartbeat": _iso(worker.last_heartbeat),
        "current_request_type": WIRE_LABEL[session.task_type] if session else None,
        "task_started_at": _iso(session.started_at) if session else None,
        "ready": worker.ready,
        "draining": worker.draining,
        "healthy": worker.healthy,
        "last_error": worker.last_error,
    }


@router.get("/workers", dependencies=public)
async def workers(request: Request) -> dict:
    infos = [worker_info(w) for w in request.app.state.registry]
    return {"total": len(infos), "workers": infos}


@router.get("/cache", dependencies=public)
async def cache(request: Request) -> dict:
    return {"workers": [{"worker_id": w.worker_id, "status": w.status} for w in request.app.state.registry]}


@router.get("/api/queue", dependencies=public)
async def queue(request: Request) -> dict:
    dispatcher: Dispatcher = request.app.state.dispatcher
    now = time.monotonic()
    items = [
        {
            "ticket_id": t.ticket_id, "request_type": WIRE_LABEL[t.task_type], "session_id": t.session_id,
            "position": t.position, "estimated_wait_s": t.estimated_wait_s, "enqueued_at": _iso(t.enqueued_at),
            "wait_elapsed_s": round(now - t.enqueued, 1),
        }
        for t in dispatcher.queue
    ]
    return {"queue_length": len(items), "max_queue_size": dispatcher.max_queue_size, "items": items,
            "running_tasks": running_tasks(dispatcher)}


@router.get("/api/queue/{ticket_id}", dependencies=public)
async def ticket(ticket_id: str, request: Request) -> dict:
    t = request.app.state.dispatcher.snapshot(ticket_id)
    if t is None:
        return {"found": False, "message": "Ticket not in queue (may have been assigned or cancelled)"}
    return {"found": True, "ticket": {
        "ticket_id": t.ticket_id, "request_type": WIRE_LABEL[t.task_type], "session_id": t.session_id,
        "enqueued_at": _iso(t.enqueued_at), "position": t.position, "estimated_wait_s": t.estimated_wait_s, "cancelled": t.cancelled,
    }}


@router.delete("/api/queue/{ticket_id}", dependencies=public)
async def cancel_ticket(ticket_id: str, request: Request) -> dict:
    return {"success": request.app.state.dispatcher.cancel(ticket_id)}


# -- ETA configuration ---------------------------------------------------------------------------
class EtaConfig(BaseModel):
    """Omitted baselines revert to the defaults (the original's rule); values must be positive."""

    model_config = ConfigDict(extra="ignore")
    eta_chat_s: float = Field(15.0, gt=0)
    eta_streaming_s: float = Field(20.0, gt=0)
    eta_half_duplex_s: float = Field(180.0, gt=0)
    eta_audio_duplex_s: float = Field(120.0, gt=0)
    eta_omni_duplex_s: float = Field(90.0, gt=0)
    ema_alpha: float | None = Field(None, gt=0, le=1)


ETA_FIELDS = {
    TaskType.chat: "chat", TaskType.streaming: "streaming", TaskType.half_duplex: "half_duplex",
    TaskType.audio_duplex: "audio_duplex", TaskType.omni_duplex: "omni_duplex",
}


def eta_status(request: Request) -> dict:
    estimator = request.app.state.dispatcher.estimator
    echoed = getattr(request.app.state, "eta_config", None) or EtaConfig(
        **{f"eta_{name}_s": estimator.baselines[t] for t, name in ETA_FIELDS.items()}
    )
    body: dict = {"config": echoed.model_dump(), "ema_alpha": estimator.alpha}
    for task_type, name in ETA_FIELDS.items():
        stats = estimator.stats[task_type]
        body[f"ema_{name}_s"] = round(stats.ema, 3) if stats.ema is not None else None
    for task_type, name in ETA_FIELDS.items():
        body[f"ema_{name}_samples"] = estimator.stats[task_type].samples
    return body


def apply_eta_config(app, config: EtaConfig) -> None:
    """Hand the baselines to the dispatcher, which owns the estimator; the route keeps the echo."""
    baselines = {task_type: getattr(config, f"eta_{name}_s") for task_type, name in ETA_FIELDS.items()}
    app.state.dispatcher.configure_eta(baselines, config.ema_alpha)
    app.state.eta_config = config


def eta_path(app) -> Path:
    return app.state.settings.data_dir / "gateway" / "eta.json"


@router.get("/api/config/eta", dependencies=public)
async def get_eta(request: Request) -> dict:
    return eta_status(request)


@router.put("/api/config/eta", dependencies=[Depends(require_admin)])
async def put_eta(config: EtaConfig, request: Request) -> dict:
    apply_eta_config(request.app, config)
    await asyncio.to_thread(atomic_write_json, eta_path(request.app), config.model_dump())
    return eta_status(request)


# -- front-end helpers ---------------------------------------------------------------------------
@router.get("/api/frontend_defaults")
async def frontend_defaults(request: Request) -> dict:
    settings = request.app.state.settings
    body: dict = {"playback_delay_ms": settings.config.audio.playback_delay_ms}
    if settings.lang:
        body["default_lang"] = settings.lang
    return body


@router.post("/api/_debug/record_trace", dependencies=public)
async def record_trace(request: Request) -> dict:
    raw = await read_limited(request, TRACE_BODY_LIMIT, "Trace")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise HTTPException(422, "Body must be a JSON object")
    if not isinstance(payload, dict):
        raise HTTPException(422, "Body must be a JSON object")
    line = json.dumps({"ts": datetime.now().isoformat(timespec="milliseconds"), **payload}, ensure_ascii=False)
    await asyncio.to_thread(_append_trace, request.app.state.settings.data_dir / "diag" / "mobile-record-trace.jsonl", line)
    return {"ok": True}


def _append_trace(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > TRACE_MAX_BYTES:
        path.replace(path.with_suffix(path.suffix + ".1"))
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
