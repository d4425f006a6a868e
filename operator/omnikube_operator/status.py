"""Status derived from what the reconcile observed: worker counts, a per-worker summary, the
gateway endpoint and the three conditions, each with a reason a program can match and a message a
person can act on.

- Ready: every desired worker is ready and the gateway is available.
- Progressing: the operator is still moving towards the spec (creating, scaling, draining, rolling,
  downloading weights).
- Degraded: something needs a person (a spec the operator cannot honour, a failed download, an
  image that cannot be pulled, a crash-looping worker, an API error).

`compute` is pure; a condition keeps its lastTransitionTime until its status flips, so an unchanged
world yields an identical status and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omnikube.spec import Phase

from .health import Load
from .model_cache import JobState
from .scaling import Plan, WorkerPod
from .validation import Problem

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
# Container waiting reasons a person has to fix (image name, registry access, a crashing command).
STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                 "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError")
MESSAGE_CHARS = 300  # of a crash-looping container's own termination message, quoted in a condition


@dataclass
class PodTrouble:
    unschedulable: dict[str, str] = field(default_factory=dict)   # pod -> scheduler message
    stuck: dict[str, str] = field(default_factory=dict)           # pod -> "Reason: message"
    waiting: dict[str, str] = field(default_factory=dict)         # pod -> why not ready yet


def pod_trouble(pods: list[dict[str, Any]]) -> PodTrouble:
    trouble = PodTrouble()
    for pod in pods:
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                trouble.unschedulable[name] = condition.get("message") or condition.get("reason") or "unschedulable"
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in STUCK_REASONS:
                last_exit = _last_exit(container) if reason == "CrashLoopBackOff" else None
                trouble.stuck[name] = f"{reason}: {last_exit or waiting.get('message') or container.get('image')}"
            elif reason:
                trouble.waiting[name] = reason
    return trouble


def _last_exit(container: dict[str, Any]) -> str | None:
    """Why a crash-looping container last ended, in its own words (the worker writes a failed load's
    reason to its termination message), rather than the kubelet's "back-off 10s restarting"."""
    terminated = (container.get("lastState") or {}).get("terminated") or {}
    message = (terminated.get("message") or "").strip()
    if not message:
        return None
    return f"exit code {terminated.get('exitCode')}: {message[:MESSAGE_CHARS]}"


@dataclass
class Observation:
    generation: int
    desired: int = 0
    selector: str = ""
    workers: list[WorkerPod] = field(default_factory=list)
    trouble: PodTrouble = field(default_factory=PodTrouble)
    gateway: dict[str, Any] | None = None
    gateway_replicas: int = 1
    gateway_endpoint: str | None = None
    download: JobState | None = None
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None
    plan: Plan | None = None
    notes: list[str] = field(default_factory=list)
    queue_length: int | None = None
    load: Load | None = None
    autoscaling: dict[str, Any] | None = None  # the autoscaler's last look (status.autoscaling)


def _condition(type_: str, ok: bool, reason: str, message: str, generation: int,
               previous: dict[str, dict[str, Any]], now: str) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(type_) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or now, "observedGeneration": generation}


def _sample(names: dict[str, str]) -> str:
    """One message for many pods: pods with the same message are grouped."""
    by_message: dict[str, list[str]] = {}
    for name, message in sorted(names.items()):
        by_message.setdefault(message, []).append(name)
    return "; ".join(f"{', '.join(pods)}: {message}" for message, pods in by_message.items())


def _degraded(obs: Observation) -> tuple[bool, str, str]:
    if obs.problems:
        return True, obs.problems[0].reason, "; ".join(p.message for p in obs.problems) + " (running workers and gateway left as they were)"
    if obs.download and obs.download.failed:
        return True, "ModelDownloadFailed", obs.download.message
    if obs.error:
        return True, "ReconcileError", obs.error
    if obs.trouble.stuck:
        stuck = {k: v for k, v in obs.trouble.stuck.items()}
        reason = "WorkerCrashLooping" if all("CrashLoopBackOff" in v for v in stuck.values()) else "WorkerImageUnavailable"
        return True, reason, f"{len(stuck)} worker pod(s) cannot run: {_sample(stuck)}"
    return False, "AsExpected", "no problem found"


def _gateway_ready(obs: Observation) -> bool:
    if obs.gateway_replicas == 0:
        return True
    return bool(obs.gateway and ((obs.gateway.get("status") or {}).get("availableReplicas") or 0) >= 1)


def _ready(obs: Observation, ready_workers: int) -> tuple[bool, str, str]:
    if obs.desired == 0:
        return False, "NoWorkers", "spec.workers.replicas is 0; scale up to serve requests"
    if obs.download and not obs.download.done:
        return False, "ModelNotDownloaded", f"workers start once the weights are in the cache: {obs.download.message}"
    if ready_workers < obs.desired:
        unschedulable = {w.name: obs.trouble.unschedulable[w.name] for w in obs.workers if w.name in obs.trouble.unschedulable}
        if unschedulable:
            return False, "WorkersUnschedulable", (f"{ready_workers}/{obs.desired} workers ready; {len(unschedulable)} worker "
                                                   f"pod(s) unschedulable: {_sample(unschedulable)}")
        waiting = {w.name: obs.trouble.waiting.get(w.name, "starting (loading the model)")
                   for w in obs.workers if not w.ready and not w.terminating}
        detail = f": {_sample(waiting)}" if waiting else ""
        return False, "WorkersNotReady", f"{ready_workers}/{obs.desired} workers ready{detail}"
    if not _gateway_ready(obs):
        return False, "GatewayNotReady", "the gateway Deployment has no available replica yet"
    return True, "AllWorkersReady", f"{ready_workers}/{obs.desired} workers ready; gateway at {obs.gateway_endpoint}"


def _progressing(obs: Observation, ready_workers: int) -> tuple[bool, str, str]:
    if obs.problems:
        return False, "SpecRejected", "the last spec was not applied; see the Degraded condition"
    if obs.download and not obs.download.done and not obs.download.failed:
        return True, "DownloadingModel", obs.download.message
    live = [w for w in obs.workers if not w.terminating]
    draining = [w.name for w in live if w.draining]
    outdated = [w.name for w in live if w.outdated]
    if outdated:
        return True, "RollingUpdate", f"{len(outdated)} worker pod(s) still on an older template: {', '.join(outdated)}"
    if draining:
        return True, "Draining", f"waiting for the session on {', '.join(draining)} to end before removing it"
    current = len([w for w in live])
    if current != obs.desired or (obs.plan and not obs.plan.empty):
        return True, "Scaling", f"{current} worker pod(s), {obs.desired} desired"
    if ready_workers < obs.desired:
        return True, "WorkersStarting", f"{ready_workers}/{obs.desired} workers ready"
    return False, "Complete", f"generation {obs.generation} fully rolled out"


def compute(obs: Observation, previous: dict[str, Any], now: str) -> dict[str, Any]:
    """The whole status object (camelCase, as the CRD's schema has it)."""
    live = [w for w in obs.workers if not w.terminating]
    ready_workers = sum(1 for w in live if w.ready and not w.draining)
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    degraded = _degraded(obs)
    ready = _ready(obs, ready_workers)
    progressing = _progressing(obs, ready_workers)
    conditions = [
        _condition(READY, *ready, obs.generation, before, now),
        _condition(PROGRESSING, *progressing, obs.generation, before, now),
        _condition(DEGRADED, *degraded, obs.generation, before, now),
    ]
    if degraded[0]:
        phase = Phase.Degraded
    elif ready[0]:
        phase = Phase.Ready
    elif ready_workers == 0:
        phase = Phase.Pending
    else:
        phase = Phase.Progressing
    return {
        "observedGeneration": obs.generation,
        "phase": phase.value,
        "conditions": conditions,
        "desiredWorkers": obs.desired,
        "readyWorkers": ready_workers,
        "replicas": len(live),
        "ready": f"{ready_workers}/{obs.desired}",
        "selector": obs.selector,
        "workers": [_summary(w, obs.trouble) for w in sorted(live, key=lambda w: w.index)],
        "gatewayEndpoint": obs.gateway_endpoint,
        "queueLength": obs.queue_length,
        "notes": obs.notes,
        "autoscaling": _without_nulls(obs.autoscaling),
    }


def _without_nulls(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The API server drops nulls inside objects and lists; leaving them out keeps a status compared
    with what was stored equal, so an unchanged world writes nothing."""
    return {k: v for k, v in value.items() if v is not None} if value else value


def _summary(worker: WorkerPod, trouble: PodTrouble) -> dict[str, Any]:
    message = trouble.stuck.get(worker.name) or trouble.unschedulable.get(worker.name) or ""
    if not message and not worker.ready:
        message = trouble.waiting.get(worker.name, "")
    summary = {
        "name": worker.name,
        "index": worker.index,
        "phase": worker.phase,
        "ready": worker.ready,
        "draining": worker.draining,
        "outdated": worker.outdated,
    }
    if worker.worker_status is not None:
        summary["workerStatus"] = worker.worker_status
    # Left out when empty: the local 1.20 API server stores an empty string inside a list as null,
    # which its own schema check then rejects (and drops a null, so it would differ on every pass).
    if message:
        summary["message"] = message
    return summary
