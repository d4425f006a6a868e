"""kopf wiring: one handler per concern, all running the same level-based pass (`Reconciler`).

- `owned_pods` (kopf.index): the worker and gateway pods of each OmniDeployment, kept by kopf's
  own watch; a pass reads them from here and never lists pods.
- `spec_changed` (on.create / on.update / on.resume): the spec, applied; status through kopf's
  `patch.status`. What will pass (an API error, a Secret not created yet) raises TemporaryError
  with a delay, so kopf retries; what needs a spec edit raises PermanentError after the Degraded
  condition says why.
- `child_changed` (on.event of pods, services, configmaps, deployments, jobs we made): acts at once
  for the owner (a deleted pod replaced, a drained one removed when its session ends, a child put
  back). It writes no status: the OmniDeployment's own handlers do, within one `health` interval.
- `health` (timer, every `resync_seconds`): the periodic look: each worker's /health, the gateway's
  queue, the autoscaler, drains that finished, children edited by hand, then status.

Handlers for one OmniDeployment never run a pass at the same time (a lock per object), and a burst
of child events waiting for that lock collapses into one pass.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from omnikube import labels

from . import leadership, metrics
from .kube import Kube
from .reconcile import Outcome, Pods, Reconciler

log = logging.getLogger(__name__)

CHILD_KINDS = (("v1", "pods"), ("v1", "services"), ("v1", "configmaps"), ("apps/v1", "deployments"), ("batch/v1", "jobs"))
OURS = {labels.MANAGED_BY: labels.MANAGER}
DEFAULT_RESYNC_S = 10.0


@dataclass
class Runtime:
    reconciler: Reconciler | None = None
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    queued: set[tuple[str, str]] = field(default_factory=set)
    managed: set[tuple[str, str]] = field(default_factory=set)

    def get_reconciler(self) -> Reconciler:
        if self.reconciler is None:
            self.reconciler = Reconciler(Kube())
        return self.reconciler

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())


RUNTIME = Runtime()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's own bookkeeping under our domain, and keep kopf quiet about retries it makes.
    settings.persistence.finalizer = f"{labels.GROUP}/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=labels.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=labels.GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    leadership.configure(settings)


# Handlers receive the object's labels as a kwarg named `labels`; these keep the module's at hand.
_DEPLOYMENT, _COMPONENT = labels.DEPLOYMENT, labels.COMPONENT
_WORKER, _GATEWAY = labels.COMPONENT_WORKER, labels.COMPONENT_GATEWAY


@kopf.index("pods", labels=OURS)
def owned_pods(namespace: str, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status, **_: Any) -> dict:
    """(namespace, OmniDeployment, component) -> the pod's metadata and status, as plain dicts."""
    owner, component = labels.get(_DEPLOYMENT), labels.get(_COMPONENT)
    if not owner or component not in (_WORKER, _GATEWAY):
        return {}
    snapshot = {"metadata": copy.deepcopy(dict(meta)), "status": copy.deepcopy(dict(status))}
    return {(namespace, owner, component): snapshot}


def _pods(index: kopf.Index, namespace: str, name: str) -> Pods:
    # Copied here, on the event loop: kopf updates the index between our awaits, never during them.
    return Pods(workers=list(index.get((namespace, name, _WORKER), [])),
                gateways=list(index.get((namespace, name, _GATEWAY), [])))


async def _pass(namespace: str, name: str, body: dict[str, Any] | None, index: kopf.Index, *,
                autoscale: bool = False) -> Outcome | None:
    """One pass under the object's lock; `body` None: read it afresh (child events, coalesced:
    while one such pass waits for the lock, further child events of the same owner add nothing)."""
    reconciler = RUNTIME.get_reconciler()
    key = (namespace, name)
    if body is None:
        if key in RUNTIME.queued:
            return None
        RUNTIME.queued.add(key)
    try:
        async with RUNTIME.lock(key):
            if body is None:
                RUNTIME.queued.discard(key)
                body = await asyncio.to_thread(reconciler.kube.get, labels.API_VERSION, labels.KIND, namespace, name)
                if body is None:
                    return None
            return await asyncio.to_thread(reconciler.reconcile, body, _pods(index, namespace, name), autoscale=autoscale)
    finally:
        if body is None:
            RUNTIME.queued.discard(key)


def _report(outcome: Outcome | None, patch: kopf.Patch, *, permanent_stops: bool) -> None:
    if outcome is None:
        return
    if outcome.status:
        patch.status.update(outcome.status)
    if outcome.permanent:
        if permanent_stops:
            raise kopf.PermanentError(outcome.permanent)
        return  # the periodic look goes on; the spec handler has already given up on this spec
    if outcome.retry:
        message, delay = outcome.retry
        raise kopf.TemporaryError(message, delay=delay)


@kopf.on.resume(labels.GROUP, labels.VERSION, labels.PLURAL)
@kopf.on.create(labels.GROUP, labels.VERSION, labels.PLURAL)
@kopf.on.update(labels.GROUP, labels.VERSION, labels.PLURAL)
async def spec_changed(namespace: str, name: str, body: kopf.Body, patch: kopf.Patch, owned_pods: kopf.Index,
                       **_: Any) -> None:
    """Apply the spec: children, workers, status."""
    _report(await _pass(namespace, name, _plain(body), owned_pods), patch, permanent_stops=True)


async def health(namespace: str, name: str, body: kopf.Body, patch: kopf.Patch, owned_pods: kopf.Index,
                 **_: Any) -> None:
    """The periodic look: workers' /health, the gateway's queue, the autoscaler, status."""
    _report(await _pass(namespace, name, _plain(body), owned_pods, autoscale=True), patch, permanent_stops=False)


async def child_changed(namespace: str | None, labels: kopf.Labels, owned_pods: kopf.Index, **_: Any) -> None:
    """Act at once for the owner of a child that changed; status follows from the owner's handlers."""
    name = labels.get(_DEPLOYMENT)
    if not namespace or not name:
        return
    try:
        await _pass(namespace, name, None, owned_pods)
    except Exception as exc:  # noqa: BLE001 - the periodic pass retries; an event has no retry of its own
        log.warning("pass for %s/%s after a child change failed: %s", namespace, name, exc)


for _api_version, _plural in CHILD_KINDS:
    kopf.on.event(_api_version, _plural, labels=OURS, id=f"child-{_plural}")(child_changed)


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL)
def count_managed(type: str, namespace: str, name: str, meta: kopf.Meta, **_: Any) -> None:
    if type == "DELETED" or meta.get("deletionTimestamp"):
        RUNTIME.managed.discard((namespace, name))
        if RUNTIME.reconciler is not None and meta.get("uid"):
            RUNTIME.reconciler.autoscaler.forget(meta["uid"])
    else:
        RUNTIME.managed.add((namespace, name))
    metrics.MANAGED_DEPLOYMENTS.set(len(RUNTIME.managed))


def _plain(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def register(resync_seconds: float = DEFAULT_RESYNC_S) -> None:
    """Register the periodic handler, whose interval is a command-line setting (once, before kopf starts)."""
    kopf.timer(labels.GROUP, labels.VERSION, labels.PLURAL, id="health", interval=resync_seconds)(health)
