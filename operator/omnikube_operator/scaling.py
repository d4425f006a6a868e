"""Which worker pods to create, drain, bring back or delete: a pure planner, no API calls.

Rules, in order:
- A failed pod is deleted (and so replaced).
- A drained pod is deleted once its worker is idle (or not ready) or its drain timeout has passed;
  if the spec wants more workers again, a drained pod that is still current is brought back instead.
- Scaling up fills the lowest free indexes. Scaling down removes pods that are not ready first,
  then idle ones, then busy ones, highest index first among equals. A ready pod is never deleted
  directly: it is drained first (the gateway stops sending it work) and deleted on a later pass,
  when its worker says idle, so nothing assigned in between is cut.
- Outdated pods (older template) are replaced in place: not-ready ones at once, ready ones drained
  while the number of unavailable workers stays within maxUnavailable, idle before busy; the new
  pod takes the same index once the old one is gone (never an extra pod meanwhile).
- A worker whose /health did not answer counts as busy: never cut what cannot be seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from omnikube import labels
from omnikube.protocol import WorkerStatus


@dataclass(frozen=True)
class WorkerPod:
    name: str
    index: int
    uid: str = ""
    resource_version: str = ""
    ready: bool = False
    terminating: bool = False
    failed: bool = False
    outdated: bool = False
    draining_since: datetime | None = None
    worker_status: str | None = None
    phase: str = ""

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    @property
    def busy(self) -> bool:
        """In a session, or unknown while ready (then assumed busy)."""
        if not self.ready:
            return False
        if self.worker_status is None:
            return True
        try:
            return WorkerStatus(self.worker_status).busy
        except ValueError:
            return True


@dataclass
class Plan:
    create: list[int] = field(default_factory=list)
    delete: list[tuple[WorkerPod, str]] = field(default_factory=list)
    drain: list[tuple[WorkerPod, str]] = field(default_factory=list)
    undrain: list[WorkerPod] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.create or self.delete or self.drain or self.undrain)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def worker_pod(pod: dict[str, Any], current_hash: str, worker_status: str | None = None) -> WorkerPod:
    """The planner's view of one pod object."""
    meta, status = pod["metadata"], pod.get("status") or {}
    annotations, pod_labels = meta.get("annotations") or {}, meta.get("labels") or {}
    draining_since = None
    if annotations.get(labels.DRAIN) == "true":
        draining_since = parse_time(annotations.get(labels.DRAIN_SINCE)) or datetime.fromtimestamp(0, timezone.utc)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return WorkerPod(
        name=meta["name"],
        index=int(pod_labels.get(labels.WORKER_INDEX, "-1")),
        uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""),
        ready=ready and not meta.get("deletionTimestamp"),
        terminating=bool(meta.get("deletionTimestamp")),
        failed=status.get("phase") in ("Failed", "Succeeded"),
        outdated=pod_labels.get(labels.TEMPLATE_HASH) != current_hash,
        draining_since=draining_since,
        worker_status=worker_status,
        phase=status.get("phase") or "",
    )


def _removal_order(pod: WorkerPod) -> tuple:
    return (pod.ready, pod.busy, not pod.outdated, -pod.index)


def plan(pods: list[WorkerPod], replicas: int, max_unavailable: int, drain_timeout_s: float, now: datetime) -> Plan:
    result = Plan()
    live = [p for p in pods if not p.terminating]
    for pod in live:
        if pod.failed:
            result.delete.append((pod, "failed"))
    live = [p for p in live if not p.failed]
    active = [p for p in live if not p.draining]
    draining = [p for p in live if p.draining]

    # An outdated pod being drained is replaced in place (same index, once it is gone): it still
    # holds its slot, so no extra pod is made meanwhile.
    need = replicas - len(active) - sum(1 for p in draining if p.outdated)
    if need > 0:
        comeback = [p for p in draining if not p.outdated][:need]
        result.undrain.extend(comeback)
        draining = [p for p in draining if p not in comeback]
        active += comeback
        need -= len(comeback)

    for pod in draining:
        if not pod.ready or not pod.busy:
            result.delete.append((pod, "drained and idle"))
        elif (now - pod.draining_since).total_seconds() >= drain_timeout_s:
            result.delete.append((pod, f"drain timeout ({drain_timeout_s:g}s) passed"))

    if need > 0:
        used = {p.index for p in pods}
        free = (i for i in range(len(pods) + need + 1) if i not in used)
        result.create.extend(next(free) for _ in range(need))
    elif need < 0:
        for pod in sorted(active, key=_removal_order)[: -need]:
            _take_out(result, pod, "scale down")
        leaving = {p for p, _ in result.drain} | {p for p, _ in result.delete}
        active = [p for p in active if p not in leaving]

    # Rolling replacement, bounded by what may be unavailable at once.
    unavailable = max(0, replicas - sum(1 for p in active if p.ready))
    budget = max_unavailable - unavailable
    for pod in sorted((p for p in active if p.outdated), key=_removal_order):
        if not pod.ready:
            result.delete.append((pod, "outdated and not ready"))
        elif budget > 0:
            result.drain.append((pod, "rolling update"))
            budget -= 1
    return result


def _take_out(result: Plan, pod: WorkerPod, reason: str) -> None:
    if pod.ready:
        result.drain.append((pod, reason))
    else:
        result.delete.append((pod, f"{reason}, not ready"))
