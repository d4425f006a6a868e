"""kopf wiring: one reconcile loop (a daemon) per OmniDeployment, woken early by changes.

Level-based: every `resync_seconds` the daemon reads the object afresh and runs a full reconcile
pass, so whatever happened in between (a pod deleted, a child edited, an operator restart) is
found and fixed. Watch events on the OmniDeployment and on its children only wake the loop
sooner; they never carry state of their own, so a missed event costs at most one resync period.
The reconcile itself is synchronous (the Kubernetes client is) and runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
import urllib3

from omnikube import labels

from . import leadership, metrics
from .kube import Kube
from .reconcile import Reconciler

log = logging.getLogger(__name__)

CHILD_KINDS = (("v1", "pods"), ("v1", "services"), ("v1", "configmaps"), ("apps/v1", "deployments"), ("batch/v1", "jobs"))


@dataclass
class Runtime:
    reconciler: Reconciler | None = None
    resync_seconds: float = 10.0
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def get_reconciler(self) -> Reconciler:
        if self.reconciler is None:
            self.reconciler = Reconciler(Kube())
        return self.reconciler


RUNTIME = Runtime()


def _wakeup(namespace: str, name: str) -> asyncio.Event:
    return RUNTIME.wakeups.setdefault((namespace, name), asyncio.Event())


def _wake(namespace: str | None, name: str | None) -> None:
    event = RUNTIME.wakeups.get((namespace or "", name or ""))
    if event is not None:
        event.set()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's own bookkeeping under our domain, and keep kopf quiet about daemons it restarts.
    settings.persistence.finalizer = f"{labels.GROUP}/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=labels.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=labels.GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    leadership.configure(settings)


@kopf.daemon(labels.GROUP, labels.VERSION, labels.PLURAL, cancellation_timeout=10, backoff=2)
async def reconcile_loop(name: str, namespace: str, stopped: kopf.DaemonStopped, logger: logging.Logger, **_: Any) -> None:
    """Reconcile one OmniDeployment until it is deleted or the operator stops."""
    reconciler = RUNTIME.get_reconciler()
    wake = _wakeup(namespace, name)
    metrics.MANAGED_DEPLOYMENTS.inc()
    try:
        while not stopped:
            wake.clear()
            try:
                body = await asyncio.to_thread(reconciler.kube.get, labels.API_VERSION, labels.KIND, namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return
                await asyncio.to_thread(reconciler.reconcile, body)
            except Exception as exc:  # API outage or a bug: the next pass retries, the loop goes on
                metrics.RECONCILES_TOTAL.labels("error").inc()
                logger.error("reconcile of %s/%s failed: %s", namespace, name, exc, exc_info=not _is_outage(exc))
            # Stopping (a pause in favour of the leader, or shutdown) ends the loop at once, not
            # after the resync wait: two operators must never reconcile at the same time.
            waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait(RUNTIME.resync_seconds))]
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in pending:
                waiting.cancel()
    finally:
        metrics.MANAGED_DEPLOYMENTS.dec()
        RUNTIME.wakeups.pop((namespace, name), None)


def _is_outage(exc: Exception) -> bool:
    """Connection trouble with the API server: worth one line in the log, not a traceback."""
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError)) or getattr(exc, "status", 0) in (429, 500, 503, 504)


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL)
async def omnideployment_changed(name: str, namespace: str, **_: Any) -> None:
    _wake(namespace, name)


async def child_changed(namespace: str | None, **kwargs: Any) -> None:
    _wake(namespace, (kwargs.get("labels") or {}).get(labels.DEPLOYMENT))


for _api_version, _plural in CHILD_KINDS:
    kopf.on.event(_api_version, _plural, labels={labels.MANAGED_BY: labels.MANAGER}, id=f"child-{_plural}")(child_changed)
