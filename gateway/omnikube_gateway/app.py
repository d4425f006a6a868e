"""The gateway's FastAPI application: `create_app(settings)` wires every part in its lifespan.

Start-up order: per-worker HTTP clients -> registry + dispatcher -> persisted state (ETA baselines,
apps, API keys, ref-audio index) -> discovery (static list, or the pod watch) -> health probes (the
first round is awaited, briefly, so the first request finds its workers) -> serve. Shut-down runs
the same in reverse, after live sessions were ended with an error frame (`SessionTracker`; the CLI's
server does that on SIGTERM before uvicorn cuts the sockets); waiting tickets are told the gateway
is going away.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from omnikube import labels

from . import admin, apps, openai_api, presets, proxy_http, proxy_ws, realtime, recordings, ref_audio, web
from .auth import KeySet, read_key_file
from .client_session import SessionTracker
from .discovery import PodWatcher, load_static
from .dispatch import Dispatcher
from .eta import ResidualEstimator, baselines_from_config
from .health import HealthProber
from .kube import load_auth
from .registry import WorkerRegistry
from .settings import GatewaySettings
from .storage import read_json
from .upstream import WorkerClients

log = logging.getLogger("omnikube_gateway")

FIRST_PROBE_WAIT_S = 3.0
FIRST_LIST_WAIT_S = 5.0


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state
        state.worker_clients = clients = WorkerClients(httpx.Timeout(settings.request_timeout, connect=3.0))
        service = settings.config.service
        state.registry = registry = WorkerRegistry()
        estimator = ResidualEstimator(baselines_from_config(service), alpha=service.eta_ema_alpha, min_samples=service.eta_ema_min_samples)
        state.dispatcher = dispatcher = Dispatcher(registry, estimator, max_queue_size=settings.max_queue_size,
                                                   queue_timeout=settings.request_timeout)
        await _load_state(app, settings)
        state.prober = prober = HealthProber(registry, clients, interval=settings.health_interval_s,
                                             fast_interval=settings.unhealthy_probe_interval_s, timeout=settings.health_timeout_s)
        registry.on_worker_added = prober.watch
        registry.on_unhealthy = prober.watch
        registry.on_worker_removed = lambda worker: clients.discard(worker.worker_id)
        state.watcher = None
        if settings.kubernetes:
            auth = await asyncio.to_thread(load_auth, settings.kubeconfig)
            namespace = settings.namespace or auth.namespace or "default"
            selector = settings.selector or labels.worker_selector(settings.deployment)
            state.watcher = PodWatcher(registry, auth, namespace=namespace, selector=selector, base_port=service.worker_base_port)
            state.watcher.start()
            log.info("discovering workers in namespace %s with selector %s", namespace, selector)
        else:
            load_static(registry, settings.static_workers)
        prober.start()
        if state.watcher is not None:
            await _bounded(state.watcher.synced.wait(), FIRST_LIST_WAIT_S)
        await _bounded(prober.probe_all(), FIRST_PROBE_WAIT_S)
        dispatcher.start()
        recording = settings.config.recording
        cleaner = asyncio.create_task(recordings.cleanup_loop(
            settings.data_dir / "sessions", recording.session_retention_days, recording.max_storage_gb))
        try:
            yield
        finally:
            cleaner.cancel()
            await state.sessions.stop_all()
            await dispatcher.stop()
            if state.watcher is not None:
                await state.watcher.stop()
            await prober.stop()
            await clients.aclose()

    app = FastAPI(title="Omnikube Gateway", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.sessions = SessionTracker()
    for module in (admin, proxy_http, proxy_ws, apps, recordings, ref_audio, presets):
        app.include_router(module.router)
    app.include_router(web.router)
    app.include_router(realtime.router)
    app.include_router(openai_api.router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        request.app.state.dispatcher.export_metrics()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _load_state(app: FastAPI, settings: GatewaySettings) -> None:
    state = app.state
    public, admin_keys = await asyncio.gather(
        asyncio.to_thread(read_key_file, settings.api_keys_file), asyncio.to_thread(read_key_file, settings.admin_keys_file)
    )
    state.keys = KeySet(public, admin_keys)
    state.apps = apps.AppsState(settings.data_dir / "gateway" / "apps.json")
    await state.apps.load()
    try:
        saved = await asyncio.to_thread(read_json, admin.eta_path(app), None)
        if saved:
            admin.apply_eta_config(app, admin.EtaConfig.model_validate(saved))
    except ValueError as exc:
        log.error("ignoring unreadable ETA settings: %s", exc)
    state.ref_audio = ref_audio.RefAudioRegistry(settings.data_dir / "ref_audio")
    await state.ref_audio.load()


async def _bounded(awaitable, timeout: float) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        pass
