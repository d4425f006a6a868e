"""One reconcile pass over one OmniDeployment: ordered small steps, then always the status.

The steps (RBAC, config, storage, model cache, services, gateway, disruption budget, monitoring,
workers) each bring one group of children to the spec and stop the pass at the first API error.
Every pass is level-based and idempotent: it reads what exists, changes only what differs, and a
second pass right after changes nothing. A spec the operator cannot honour (see `validation`)
skips every step, so nothing running is touched; status and an Event say why.

The pass never lists pods: the handlers hand it kopf's index of the pods each OmniDeployment owns
(`Pods`). It probes each ready worker's /health once, reads the gateway's queue once, and returns
an `Outcome`: the status patch (for kopf's `patch.status`) and whether what went wrong will pass
by itself (retry) or needs a person (a condition with the reason; no retry).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from omnikube import labels
from omnikube.spec import ModelCacheSource

from . import (autoscaling, configmap, gateway, health, metrics, model_cache, monitoring, pods, preflight, rbac, scaling, services,
               storage, validation)
from .context import Owner
from .events import Recorder
from .kube import Kube, api_message
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


class NotOurs(Exception):
    """A child's name is taken by an object this OmniDeployment does not own."""


DELETED_MEMORY_S = 120.0       # far longer than the index lags behind a deletion
RETRY_AFTER_ERROR_S = 5.0        # an API hiccup: try again soon
RETRY_AFTER_PROBLEM_S = 30.0     # a Secret, claim or class that may be created meanwhile
STATUS_KEPT_WHEN_UNPARSABLE = ("desiredWorkers", "readyWorkers", "replicas", "ready", "selector", "workers",
                               "gatewayEndpoint", "queueLength", "autoscaling")


@dataclass(frozen=True)
class Pods:
    """The pods of one OmniDeployment, from kopf's index (plain dicts: metadata and status)."""

    workers: list[dict[str, Any]] = field(default_factory=list)
    gateways: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Outcome:
    status: dict[str, Any] | None = None   # merge patch for .status, None when nothing changed
    error: str | None = None
    problems: list[validation.Problem] = field(default_factory=list)

    @property
    def permanent(self) -> str | None:
        """What only a spec edit fixes (kopf: PermanentError, no retry)."""
        if any(p.permanent for p in self.problems):
            return "; ".join(p.message for p in self.problems)
        return None

    @property
    def retry(self) -> tuple[str, float] | None:
        """What will likely pass: message and delay (kopf: TemporaryError)."""
        if self.error:
            return self.error, RETRY_AFTER_ERROR_S
        if self.problems and not self.permanent:
            return "; ".join(p.message for p in self.problems), RETRY_AFTER_PROBLEM_S
        return None


def status_patch(previous: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning `previous` into `status` (keys gone are nulled), None if equal."""
    if previous == status:
        return None
    patch: dict[str, Any] = {key: None for key in previous if key not in status}
    patch.update({key: value for key, value in status.items() if previous.get(key) != value})
    return patch or None


class Reconciler:
    def __init__(self, kube: Kube, recorder: Recorder | None = None, probe: health.Probe = health.probe_workers,
                 clock: Clock = _utcnow, autoscaler: autoscaling.Autoscaler | None = None) -> None:
        self.kube = kube
        self.recorder = recorder or Recorder(kube)
        self.probe = probe
        self.clock = clock
        self.autoscaler = autoscaler or autoscaling.Autoscaler()
        # Worker pods this operator deleted: kopf's index may show them a moment longer, and a slot
        # must not look taken by a pod that is gone (its index would drift to a new number).
        self._deleted: dict[str, float] = {}

    # --- the pass ---

    def reconcile(self, body: dict[str, Any], pods: Pods, *, autoscale: bool = False) -> Outcome:
        """One pass; `autoscale` lets the autoscaler move replicas first (the periodic pass does)."""
        if body["metadata"].get("deletionTimestamp"):
            return Outcome()  # the garbage collector removes the children through their owner references
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
        previous = body.get("status") or {}
        if owner.spec.workers.autoscaling.enabled:
            obs.autoscaling = previous.get("autoscaling")  # until this pass looks again (the periodic one does)
        try:
            # Everything that decides whether this spec may be applied at all goes here, before any step.
            obs.problems = validation.check(self.kube, owner) or preflight.check(self.kube, owner)
            self._observe(owner, pods, obs)
            if autoscale and not obs.problems:
                owner, body = self._autoscale(owner, body, obs)
        except ApiException as exc:
            obs.error = f"observing failed: {exc.status} {api_message(exc)}"
        if obs.problems:
            self.recorder.warning(body, "SpecRejected", "; ".join(p.message for p in obs.problems))
        else:
            self.recorder.clear_warning(body, "SpecRejected")
        if not obs.problems and not obs.error:
            self._run_steps(owner, body, obs)
        self._fill_gaps(owner, obs)
        status = compute(obs, previous, _rfc3339(self.clock()))
        result = "error" if obs.error else "degraded" if obs.problems else "ok"
        metrics.RECONCILES_TOTAL.labels(result).inc()
        metrics.RECONCILE_DURATION_SECONDS.observe(time.monotonic() - started)
        return Outcome(status_patch(previous, status), obs.error, obs.problems)

    def _run_steps(self, owner: Owner, body: dict[str, Any], obs: Observation) -> None:
        steps = (self.rbac, self.config, self.storage, self.model_cache, self.services, self.gateway,
                 self.disruption_budget, self.monitoring, self.workers)
        for step in steps:
            try:
                step(owner, body, obs)
            except (ApiException, NotOurs) as exc:
                detail = f"{exc.status} {api_message(exc)}" if isinstance(exc, ApiException) else str(exc)
                obs.error = f"step {step.__name__} failed: {detail}"
                metrics.RECONCILE_ERRORS_TOTAL.labels(step.__name__).inc()
                self.recorder.warning(body, "ReconcileFailed", obs.error)
                log.warning("%s/%s: %s", owner.namespace, owner.name, obs.error)
                return
        self.recorder.clear_warning(body, "ReconcileFailed")

    def _reject_unparsable(self, body: dict[str, Any], exc: ValidationError) -> Outcome:
        meta = body["metadata"]
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        problem = validation.Problem("InvalidSpec", f"spec.{where}: {first['msg']}", permanent=True)
        obs = Observation(generation=int(meta.get("generation") or 0), problems=[problem])
        self.recorder.warning(body, "SpecRejected", problem.message)
        previous = body.get("status") or {}
        status = compute(obs, previous, _rfc3339(self.clock()))
        status.update({k: previous[k] for k in STATUS_KEPT_WHEN_UNPARSABLE if k in previous})
        metrics.RECONCILES_TOTAL.labels("degraded").inc()
        return Outcome(status_patch(previous, status), problems=[problem])

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
        workers = owner.spec.workers
        plan = scaling.plan(obs.workers, workers.replicas, workers.max_unavailable, workers.drain_timeout_seconds, now)
        obs.plan = plan
        current = pods.template_hash(owner)
        seen: dict[str, scaling.WorkerPod] = {w.name: w for w in obs.workers}
        for pod in plan.undrain:
            self._annotate(owner, pod, {labels.DRAIN: None, labels.DRAIN_SINCE: None})
            seen[pod.name] = replace(pod, draining_since=None)
            metrics.ACTIONS_TOTAL.labels("undrain").inc()
            self.recorder.normal(body, "UndrainedWorker", f"{pod.name} takes new work again (more workers wanted)")
        for pod, reason in plan.drain:
            self._annotate(owner, pod, {labels.DRAIN: "true", labels.DRAIN_SINCE: _rfc3339(now)})
            seen[pod.name] = replace(pod, draining_since=now)
            metrics.ACTIONS_TOTAL.labels("drain").inc()
            state = pod.worker_status or "status unknown"
            self.recorder.normal(body, "DrainingWorker", f"{pod.name} gets no new work ({reason}; worker {state}); "
                                 f"removed when idle or after {workers.drain_timeout_seconds}s")
        for pod, reason in plan.delete:
            # Only the pod as it was seen: kopf's index can lag the API by a moment, and a pod that
            # became Ready (or busy) since must be drained, not cut. Its change starts another pass.
            if not self.kube.delete("v1", "Pod", owner.namespace, pod.name, uid=pod.uid,
                                    resource_version=pod.resource_version or None):
                continue
            metrics.ACTIONS_TOTAL.labels("delete").inc()
            self.recorder.normal(body, "DeletedWorkerPod", f"deleted {pod.name}: {reason}")
            self._deleted[pod.uid] = time.monotonic()
            seen[pod.name] = replace(pod, terminating=True, ready=False)
        for index in plan.create:
            try:
                created = self.kube.create(pods.build_worker_pod(owner, index))
            except ApiException as exc:
                if exc.status == 409:  # its predecessor of the same name is still terminating
                    continue
                raise
            seen[created["metadata"]["name"]] = scaling.worker_pod(created, current)
            metrics.ACTIONS_TOTAL.labels("create").inc()
            self.recorder.normal(body, "CreatedWorkerPod", f"created {owner.worker_pod(index)} (worker {index})")
        obs.workers = sorted(seen.values(), key=lambda w: w.index)  # what status shows, actions included

    def _annotate(self, owner: Owner, pod: scaling.WorkerPod, annotations: dict[str, str | None]) -> None:
        patch = {"metadata": {"annotations": annotations, "uid": pod.uid}}
        try:
            self.kube.patch("v1", "Pod", owner.namespace, pod.name, patch)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone (or replaced) since the index saw it: nothing to mark
                raise

    # --- observation, autoscaling and status ---

    def _observe(self, owner: Owner, found: Pods, obs: Observation) -> None:
        """The planner's view of every worker (each ready one asked once) and the gateway's queue."""
        found_workers = self._still_there(owner, found.workers)
        views = [scaling.worker_pod(p, "") for p in found_workers]
        ready = [p for p, view in zip(found_workers, views) if view.ready]
        statuses = self.probe(ready) if ready else {}
        current = pods.template_hash(owner)
        obs.workers = [scaling.worker_pod(p, current, statuses.get(p["metadata"]["name"])) for p in found_workers]
        obs.trouble = pod_trouble(found_workers)
        gateways = [p for p in found.gateways if scaling.worker_pod(p, "").ready]
        if gateways:
            obs.load = health.gateway_load(gateways, owner.spec.service.gateway_port, not owner.spec.gateway.http)
            obs.queue_length = obs.load.queue_length if obs.load else None

    def _fill_gaps(self, owner: Owner, obs: Observation) -> None:
        """What status shows of the gateway when its steps did not run (a rejected spec, an error)."""
        try:
            if obs.gateway is None:
                obs.gateway = self.kube.get("apps/v1", "Deployment", owner.namespace, owner.gateway)
            if obs.gateway_endpoint is None:
                service = self.kube.get("v1", "Service", owner.namespace, owner.gateway)
                obs.gateway_endpoint = services.gateway_endpoint(owner, service) if service else None
        except ApiException as exc:
            obs.error = obs.error or f"reading the gateway failed: {exc.status} {api_message(exc)}"

    def _still_there(self, owner: Owner, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The index's worker pods, less those already gone. kopf's index lags a moment behind the
        API: a pod this operator just deleted still looks live, and one that was terminating may be
        gone; a terminating pod blocks its slot's index, so each is checked (rare, one GET each)."""
        now = time.monotonic()
        self._deleted = {uid: at for uid, at in self._deleted.items() if now - at < DELETED_MEMORY_S}
        kept = []
        for pod in found:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") or meta.get("uid") in self._deleted:
                live = self.kube.get("v1", "Pod", owner.namespace, meta["name"])
                if live is None or live["metadata"].get("uid") != meta.get("uid"):
                    continue
                pod = live
            kept.append(pod)
        return kept

    def _autoscale(self, owner: Owner, body: dict[str, Any], obs: Observation) -> tuple[Owner, dict[str, Any]]:
        """Let the load set spec.workers.replicas, the field the scale subresource (kubectl scale, an
        HPA) sets too; written on the object itself, which the operator may patch already."""
        spec = owner.spec.workers.autoscaling
        key = owner.uid
        if not spec.enabled:
            self.autoscaler.forget(key)
            return owner, body
        current = owner.spec.workers.replicas
        decision = self.autoscaler.decide(key, spec, current, obs.workers, obs.load, time.monotonic())
        previous = (body.get("status") or {}).get("autoscaling") or {}
        last_scale = previous.get("lastScaleTime")
        metrics.AUTOSCALER_DESIRED.labels(owner.namespace, owner.name).set(decision.replicas)
        if obs.load is not None:
            metrics.AUTOSCALER_QUEUE_WAIT.labels(owner.namespace, owner.name).set(obs.load.queue_wait_s)
        if decision.replicas != current:
            self.kube.patch(labels.API_VERSION, labels.KIND, owner.namespace, owner.name,
                            {"spec": {"workers": {"replicas": decision.replicas}}})
            last_scale = _rfc3339(self.clock())
            metrics.AUTOSCALER_DECISIONS.labels(decision.kind).inc()
            reason = {autoscaling.SCALE_UP: "ScaledUp", autoscaling.SCALE_DOWN: "ScaledDown"}.get(decision.kind, "ReplicasClamped")
            self.recorder.normal(body, reason, f"workers {current} -> {decision.replicas}: {decision.reason}")
            body = {**body, "spec": {**body["spec"], "workers": {**body["spec"].get("workers", {}), "replicas": decision.replicas}}}
            owner = Owner.from_body(body)
            obs.desired = decision.replicas
        obs.autoscaling = {
            "desiredReplicas": decision.replicas,
            "queueLength": obs.load.queue_length if obs.load else None,
            "queueWaitSeconds": round(obs.load.queue_wait_s, 1) if obs.load else None,
            "busyWorkers": decision.busy,
            "decision": decision.kind,
            "reason": decision.reason,
            "lastScaleTime": last_scale,
        }
        return owner, body
