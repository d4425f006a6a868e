"""One reconcile pass over one OmniDeployment: ordered small steps, then always the status.

The steps (RBAC, config, storage, model cache, services, gateway, disruption budget, monitoring,
workers) each bring one group of children to the spec and stop the pass at the first API error.
Every pass is level-based and idempotent: it reads what exists, changes only what differs, and a
second pass right after changes nothing. A spec the operator cannot honour (see `validation`)
skips every step, so nothing running is touched; status and an Event say why.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from omnikube import labels
from omnikube.spec import ModelCacheSource

from . import configmap, gateway, health, metrics, model_cache, monitoring, pods, preflight, rbac, scaling, services, storage, validation
from .context import Owner
from .events import Recorder
from .kube import Kube
from .status import Observation, compute, pod_trouble

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def contains(live: Any, want: Any) -> bool:
    """Whether `live` already has every field of `want` (server-added fields are ignored)."""
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return not want and live is None
        return all(contains(live.get(key), value) for key, value in want.items())
    if isinstance(want, list):
        if not isinstance(live, list):
            return not want and live is None
        return len(live) == len(want) and all(contains(l, w) for l, w in zip(live, want))
    if want is None:
        return live is None
    return live == want or str(live) == str(want)


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or str(exc.reason)
    except ValueError:
        return str(exc.reason)


class NotOurs(Exception):
    """A child's name is taken by an object this OmniDeployment does not own."""


class Reconciler:
    def __init__(self, kube: Kube, recorder: Recorder | None = None, probe: health.Probe = health.probe_workers,
                 clock: Clock = _utcnow) -> None:
        self.kube = kube
        self.recorder = recorder or Recorder(kube)
        self.probe = probe
        self.clock = clock

    # --- the pass ---

    def reconcile(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Run one pass; returns the status it computed (None for an object being deleted)."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None  # the garbage collector removes the children through their owner references
        started = time.monotonic()
        try:
            owner = Owner.from_body(body)
        except ValidationError as exc:
            return self._reject_unparsable(body, exc)
        obs = Observation(
            generation=owner.generation,
            desired=owner.spec.workers.replicas,
            selector=labels.worker_selector(owner.name),
            gateway_replicas=owner.spec.gateway.replicas,
        )
        obs.problems = validation.check(self.kube, owner) or preflight.check(self.kube, owner)
        if obs.problems:
            self.recorder.warning(body, "SpecRejected", "; ".join(p.message for p in obs.problems))
        else:
            self.recorder.clear_warning(body, "SpecRejected")
            self._run_steps(owner, body, obs)
        self._observe(owner, obs)
        status = compute(obs, body.get("status") or {}, _rfc3339(self.clock()))
        self._write_status(owner, body, status)
        result = "error" if obs.error else "degraded" if obs.problems else "ok"
        metrics.RECONCILES_TOTAL.labels(result).inc()
        metrics.RECONCILE_DURATION_SECONDS.observe(time.monotonic() - started)
        return status

    def _run_steps(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        steps = (self.rbac, self.config, self.storage, self.model_cache, self.services, self.gateway,
                 self.disruption_budget, self.monitoring, self.workers)
        for step in steps:
            try:
                step(owner, body, obs)
            except (ApiException, NotOurs) as exc:
                detail = f"{exc.status} {_api_message(exc)}" if isinstance(exc, ApiException) else str(exc)
                obs.error = f"step {step.__name__} failed: {detail}"
                metrics.RECONCILE_ERRORS_TOTAL.labels(step.__name__).inc()
                self.recorder.warning(body, "ReconcileFailed", obs.error)
                log.warning("%s/%s: %s", owner.namespace, owner.name, obs.error)
                return
        self.recorder.clear_warning(body, "ReconcileFailed")

    def _reject_unparsable(self, body: dict[str, Any], exc: ValidationError) -> dict[str, Any]:
        meta = body["metadata"]
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        problem = validation.Problem("InvalidSpec", f"spec.{where}: {first['msg']}")
        obs = Observation(generation=int(meta.get("generation") or 0), problems=[problem])
        self.recorder.warning(body, "SpecRejected", problem.message)
        status = compute(obs, body.get("status") or {}, _rfc3339(self.clock()))
        previous = body.get("status") or {}
        status.update({k: previous[k] for k in ("desiredWorkers", "readyWorkers", "replicas", "ready", "selector", "workers",
                                                "gatewayEndpoint") if k in previous})
        self.kube.replace_status(labels.API_VERSION, labels.KIND, meta["namespace"], meta["name"], status)
        metrics.RECONCILES_TOTAL.labels("degraded").inc()
        return status

    # --- helpers ---

    def ensure(self, owner: Owner, body: dict[str, Any], obj: dict[str, Any], *, create_only: bool = False) -> dict[str, Any]:
        """Create `obj` if missing; put back its fields if they drifted (unless create_only)."""
        meta, kind = obj["metadata"], obj["kind"]
        live = self.kube.get(obj["apiVersion"], kind, meta.get("namespace"), meta["name"])
        if live is None:
            created = self.kube.create(obj) if create_only else self.kube.apply(obj)
            metrics.ACTIONS_TOTAL.labels("create").inc()
            self.recorder.normal(body, f"Created{kind}", f"created {kind} {meta['name']}")
            return created
        if not any(ref.get("uid") == owner.uid for ref in live["metadata"].get("ownerReferences") or []):
            raise NotOurs(f"{kind} {meta['name']} already exists and is not owned by this OmniDeployment; rename or remove it")
        if create_only or contains(live, obj):
            return live
        updated = self.kube.apply(obj)
        if updated["metadata"].get("resourceVersion") != live["metadata"].get("resourceVersion"):
            metrics.ACTIONS_TOTAL.labels("update").inc()
            self.recorder.normal(body, f"Updated{kind}", f"{kind} {meta['name']} differed from the spec; brought it back in line")
        return updated

    def _remove(self, body: dict[str, Any], obj: dict[str, Any], why: str) -> None:
        meta = obj["metadata"]
        if self.kube.delete(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"], uid=meta.get("uid")):
            metrics.ACTIONS_TOTAL.labels("delete").inc()
            self.recorder.normal(body, f"Deleted{obj['kind']}", f"deleted {obj['kind']} {meta['name']}: {why}")

    # --- steps, in order ---

    def rbac(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        for obj in (rbac.build_service_account(owner), rbac.build_role(owner), rbac.build_role_binding(owner)):
            self.ensure(owner, body, obj)

    def config(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        self.ensure(owner, body, configmap.build_configmap(owner))

    def storage(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        claim = storage.build_data_claim(owner)
        if claim:  # claims are never patched (mostly immutable) and never deleted by a spec edit
            self.ensure(owner, body, claim, create_only=True)

    def model_cache(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        if owner.model_source != ModelCacheSource.download.value:
            return
        self.ensure(owner, body, model_cache.build_cache_claim(owner), create_only=True)
        job = model_cache.build_download_job(owner)
        selector = f"{labels.DEPLOYMENT}={owner.name},{labels.COMPONENT}={labels.COMPONENT_MODEL_DOWNLOAD}"
        for old in self.kube.list("batch/v1", "Job", owner.namespace, selector):
            if old["metadata"]["name"] != job["metadata"]["name"]:
                self._remove(body, old, "the model to download changed")
        live = self.ensure(owner, body, job, create_only=True)
        obs.download = model_cache.job_state(live)
        if obs.download.failed:
            self.recorder.warning(body, "ModelDownloadFailed", obs.download.message)

    def services(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        self.ensure(owner, body, services.build_workers_service(owner))
        service = self.ensure(owner, body, services.build_gateway_service(owner))
        obs.gateway_endpoint = services.gateway_endpoint(owner, service)

    def gateway(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        obs.gateway = self.ensure(owner, body, gateway.build_gateway_deployment(owner))

    def disruption_budget(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        api_version = "policy/v1" if self.kube.served("policy/v1", "PodDisruptionBudget") else "policy/v1beta1"
        self.ensure(owner, body, pods.build_pdb(owner, api_version))
        self.ensure(owner, body, gateway.build_gateway_pdb(owner, api_version))

    def monitoring(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        wanted = {"ServiceMonitor": monitoring.build_service_monitor(owner), "PodMonitor": monitoring.build_pod_monitor(owner)}
        if not any(wanted.values()):
            return
        if not self.kube.served(monitoring.MONITORING_API, "ServiceMonitor"):
            obs.notes.append("Prometheus Operator CRDs (monitoring.coreos.com) not installed: ServiceMonitor/PodMonitor skipped")
            return
        names = {"ServiceMonitor": owner.gateway, "PodMonitor": owner.workers_service}
        for kind, obj in wanted.items():
            if obj is not None:
                self.ensure(owner, body, obj)
                continue
            live = self.kube.get(monitoring.MONITORING_API, kind, owner.namespace, names[kind])
            if live and any(ref.get("uid") == owner.uid for ref in live["metadata"].get("ownerReferences") or []):
                self._remove(body, live, "monitoring switched off in the spec")

    def workers(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        if obs.download and not obs.download.done:
            return  # workers start only once the weights are complete
        now = self.clock()
        views = self._worker_views(owner, obs)
        workers = owner.spec.workers
        plan = scaling.plan(views, workers.replicas, workers.max_unavailable, workers.drain_timeout_seconds, now)
        obs.plan = plan
        for pod in plan.undrain:
            self._annotate(owner, pod, {labels.DRAIN: None, labels.DRAIN_SINCE: None})
            metrics.ACTIONS_TOTAL.labels("undrain").inc()
            self.recorder.normal(body, "UndrainedWorker", f"{pod.name} takes new work again (more workers wanted)")
        for pod, reason in plan.drain:
            self._annotate(owner, pod, {labels.DRAIN: "true", labels.DRAIN_SINCE: _rfc3339(now)})
            metrics.ACTIONS_TOTAL.labels("drain").inc()
            state = pod.worker_status or "status unknown"
            self.recorder.normal(body, "DrainingWorker", f"{pod.name} gets no new work ({reason}; worker {state}); "
                                 f"removed when idle or after {workers.drain_timeout_seconds}s")
        for pod, reason in plan.delete:
            if self.kube.delete("v1", "Pod", owner.namespace, pod.name, uid=pod.uid):
                metrics.ACTIONS_TOTAL.labels("delete").inc()
                self.recorder.normal(body, "DeletedWorkerPod", f"deleted {pod.name}: {reason}")
        for index in plan.create:
            try:
                self.kube.create(pods.build_worker_pod(owner, index))
            except ApiException as exc:
                if exc.status == 409:  # its predecessor of the same name is still terminating
                    continue
                raise
            metrics.ACTIONS_TOTAL.labels("create").inc()
            self.recorder.normal(body, "CreatedWorkerPod", f"created {owner.worker_pod(index)} (worker {index})")

    def _annotate(self, owner: Owner, pod: scaling.WorkerPod, annotations: dict[str, str | None]) -> None:
        patch = {"metadata": {"annotations": annotations, "uid": pod.uid}}
        self.kube.patch("v1", "Pod", owner.namespace, pod.name, patch)

    def _worker_views(self, owner: Owner, obs: Observation) -> list[scaling.WorkerPod]:
        """Worker pods as the planner sees them, each ready one asked what it is doing."""
        found = self.kube.list("v1", "Pod", owner.namespace, labels.worker_selector(owner.name))
        ready = [p for p in found if scaling.worker_pod(p, "").ready]
        statuses = self.probe(ready) if ready else {}
        current = pods.template_hash(owner)
        obs.workers = [scaling.worker_pod(p, current, statuses.get(p["metadata"]["name"])) for p in found]
        obs.trouble = pod_trouble(found)
        return obs.workers

    # --- observation and status ---

    def _observe(self, owner: Owner, obs: Observation) -> None:
        """Refresh what status reports, after the steps changed things."""
        known = {w.name: w.worker_status for w in obs.workers}
        found = self.kube.list("v1", "Pod", owner.namespace, labels.worker_selector(owner.name))
        fresh_ready = [p for p in found if p["metadata"]["name"] not in known and scaling.worker_pod(p, "").ready]
        known.update(self.probe(fresh_ready) if fresh_ready else {})
        current = pods.template_hash(owner)
        obs.workers = [scaling.worker_pod(p, current, known.get(p["metadata"]["name"])) for p in found]
        obs.trouble = pod_trouble(found)
        if obs.gateway is None:
            obs.gateway = self.kube.get("apps/v1", "Deployment", owner.namespace, owner.gateway)
        if obs.gateway_endpoint is None:
            service = self.kube.get("v1", "Service", owner.namespace, owner.gateway)
            obs.gateway_endpoint = services.gateway_endpoint(owner, service) if service else None
        gateway_selector = f"{labels.DEPLOYMENT}={owner.name},{labels.COMPONENT}={labels.COMPONENT_GATEWAY}"
        gateway_pods = [p for p in self.kube.list("v1", "Pod", owner.namespace, gateway_selector)
                        if scaling.worker_pod(p, "").ready]
        if gateway_pods:
            obs.queue_length = health.gateway_queue_length(gateway_pods, owner.spec.service.gateway_port, not owner.spec.gateway.http)

    def _write_status(self, owner: Owner, body: dict[str, Any], status: dict[str, Any]) -> None:
        previous = body.get("status") or {}
        if all(previous.get(key) == value for key, value in status.items()):
            return
        self.kube.replace_status(labels.API_VERSION, labels.KIND, owner.namespace, owner.name, status)
