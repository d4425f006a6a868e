"""The worker's FastAPI application: lifespan (model load), health, cache, metrics, session routes.

The model loads in a thread after the server is up, so `/health` answers `loading` meanwhile
(the original accepted no connection until loaded, which left probes guessing). If loading fails,
`/health` says `error` and `on_load_failure` runs (the CLI stops the process with a non-zero code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from omnikube.protocol import DefaultRefAudio, WorkerHealthResponse, WorkerStatus

from . import chat, duplex, half_duplex, legacy, metrics, recording
from .backend import Backend
from .context import WorkerContext, get_context
from .settings import WorkerSettings
from .state import WorkerState

log = logging.getLogger("omnikube.worker")


def make_backend(settings: WorkerSettings) -> Backend:
    if settings.backend == "simulated":
        from .simulated import SimulatedBackend

        return SimulatedBackend(settings.sim)
    if settings.backend == "minicpmo":
        from .minicpmo import MiniCPMoBackend

        return MiniCPMoBackend(settings)
    raise ValueError(f"unknown backend {settings.backend!r}; choose minicpmo or simulated")


def create_app(settings: WorkerSettings | None = None, backend: Backend | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    settings = settings or WorkerSettings()
    ctx = WorkerContext(settings=settings, backend=backend or make_backend(settings),
                        state=WorkerState(busy_grace_s=settings.busy_grace_s))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.INFO.labels(ctx.backend.name, str(ctx.backend.simulated).lower(), str(settings.gpu_id)).set(1)
        loading = asyncio.create_task(_load(ctx, on_load_failure))
        try:
            yield
        finally:
            loading.cancel()
            # Replay videos in progress complete (or time out), within the drain deadline after SIGTERM if one is set.
            await recording.finish_background(getattr(app.state, "drain_deadline", None))

    app = FastAPI(title="Omnikube worker", version="0.1.0", lifespan=lifespan)
    app.state.worker = ctx
    app.add_api_route("/health", health, methods=["GET"], response_model=WorkerHealthResponse)
    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_api_route("/cache_info", cache_info, methods=["GET"])
    app.add_api_route("/clear_cache", clear_cache, methods=["POST"])
    app.add_api_route("/default_ref_audio", default_ref_audio, methods=["GET"], response_model=DefaultRefAudio)
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"])
    for module in (chat, half_duplex, duplex, legacy):
        app.include_router(module.router)
    return app


async def _load(ctx: WorkerContext, on_failure: Callable[[BaseException], None] | None) -> None:
    started = time.monotonic()
    try:
        await asyncio.to_thread(ctx.backend.load)
    except Exception as exc:
        log.exception("model load failed")
        ctx.state.failed()
        if on_failure is not None:
            on_failure(exc)
        return
    metrics.MODEL_LOAD.set(time.monotonic() - started)
    ctx.state.loaded()
    log.info("model loaded in %.1f s (backend %s)", time.monotonic() - started, ctx.backend.name)


async def health(request: Request) -> JSONResponse:
    """Never errors: during load, after a failed load and during sessions alike."""
    ctx = get_context(request)
    state = ctx.state
    loading = state.status is WorkerStatus.loading
    pace = state.pace.fit()
    body = WorkerHealthResponse(
        status="initializing" if loading else ("error" if state.status is WorkerStatus.error else "healthy"),
        worker_status=state.status, gpu_id=ctx.settings.gpu_id, model_loaded=state.ready,
        current_session_id=state.current_session_id, total_requests=state.total_requests,
        avg_inference_time_ms=round(state.avg_inference_time_ms, 1),
        kv_cache_length=ctx.backend.kv_cache_length if state.ready else 0,
        worker_index=ctx.settings.worker_index, **ctx.info(),
        generation_overhead_ms=None if pace is None else round(pace[0], 3),
        ms_per_token=None if pace is None else round(pace[1], 3),
    )
    return JSONResponse(body.model_dump(mode="json"))


async def readyz(request: Request) -> JSONResponse:
    """For Kubernetes probes: 200 once the model is loaded (busy included), 503 while loading or
    after a failed load. /health stays 200 always, as the original's clients expect."""
    state = get_context(request).state
    return JSONResponse({"ready": state.ready, "worker_status": state.status.value},
                        status_code=200 if state.ready else 503)


async def cache_info(request: Request) -> JSONResponse:
    ctx = get_context(request)
    if not ctx.state.ready:
        return JSONResponse({"detail": "Worker not ready"}, status_code=503)
    return JSONResponse({"status": ctx.state.status.value,
                         "note": "KV cache state is now tracked by Gateway (cached_hash on WorkerConnection)",
                         "kv_cache_length": ctx.backend.kv_cache_length, **ctx.info()})


async def clear_cache(request: Request) -> JSONResponse:
    """Unlike the original, refuses while a session runs: clearing its cache would corrupt it."""
    ctx = get_context(request)
    if not ctx.state.ready:
        return JSONResponse({"detail": "Worker not ready"}, status_code=503)
    if ctx.state.status.busy:
        return JSONResponse({"success": False, "detail": f"Worker busy: {ctx.state.status.value}; cache not cleared",
                             "message": "Worker busy; cache not cleared"}, status_code=409)
    await ctx.backend.clear_cache()
    return JSONResponse({"success": True, "message": "Cache cleared"})


async def default_ref_audio(request: Request) -> JSONResponse:
    """The voice this worker's replies get when a request names none (an Omnikube addition: the
    gateway's /api/default_ref_audio falls back to it, so the UI can play the voice users will hear)."""
    ctx = get_context(request)
    if not ctx.state.ready:
        return JSONResponse({"detail": "Worker not ready"}, status_code=503)
    voice = ctx.backend.default_voice()
    if voice is None:
        return JSONResponse({"detail": f"The {ctx.backend.name} backend has no default voice"}, status_code=404)
    name, samples = voice
    body = await asyncio.to_thread(DefaultRefAudio.from_samples, name, samples)
    return JSONResponse(body.model_dump())


async def metrics_endpoint() -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
