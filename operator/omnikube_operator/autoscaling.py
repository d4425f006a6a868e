"""How many workers the load asks for: a pure recommender with stabilisation windows, no API calls.

The rule, on each periodic look (`spec.workers.autoscaling`):
- No gateway answered: hold (never scale on a guess).
- Requests are queued and the gateway's estimated queue wait is above the target: one worker for
  every session held now plus every request waiting (`busy + queued`), so the queue drains as soon
  as the new workers load. Workers already starting count, so a slow model load does not make the
  operator ask again and again.
- Requests are queued within the target: hold.
- Nothing is queued: as many workers as hold a session (`busy`), so idle ones go. Which ones go is
  the scaling planner's business: idle first, and a busy worker is only ever drained, never cut.
- Always within [minReplicas, maxReplicas]; replicas set outside them (kubectl scale) are brought
  inside at once and the decision says so.

Stabilisation follows the HPA's behaviour: scaling up goes to the smallest recommendation seen over
the scale-up window, scaling down to the largest over the scale-down window, so load that comes
and goes within a window does not move replicas. A new history (e.g. after an operator restart)
starts with the current size, so a restart never scales down before a full window has passed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from omnikube.spec import AutoscalingSpec

from .health import Load
from .scaling import WorkerPod

SCALE_UP, SCALE_DOWN, HOLD, CLAMPED = "ScaleUp", "ScaleDown", "Hold", "Clamped"


@dataclass(frozen=True)
class Decision:
    replicas: int         # what spec.workers.replicas should be now
    recommendation: int   # what the load alone asks for, before stabilisation
    kind: str             # ScaleUp, ScaleDown, Hold or Clamped
    reason: str
    busy: int

    @property
    def changes(self) -> bool:
        return self.kind != HOLD


def _clamp(value: int, spec: AutoscalingSpec) -> int:
    return max(spec.min_replicas, min(spec.max_replicas, value))


def recommend(spec: AutoscalingSpec, current: int, pods: list[WorkerPod], load: Load | None) -> tuple[int, str, int]:
    """(replicas the load asks for, why, busy workers), bounds applied, no stabilisation."""
    live = [p for p in pods if not p.terminating and not p.draining]
    busy = sum(1 for p in live if p.ready and p.busy)
    if load is None:
        return _clamp(current, spec), "no gateway answered /metrics; holding", busy
    target = spec.target_queue_wait_seconds
    if load.queue_length and load.queue_wait_s > target:
        wanted = busy + load.queue_length
        why = (f"{load.queue_length} queued, estimated wait {load.queue_wait_s:.0f}s > target {target:g}s: "
               f"{busy} busy + {load.queue_length} queued")
    elif load.queue_length:
        wanted = current
        why = f"{load.queue_length} queued, estimated wait {load.queue_wait_s:.0f}s within target {target:g}s"
    else:
        wanted = busy
        why = f"queue empty, {busy} worker(s) in a session"
    bounded = _clamp(wanted, spec)
    if bounded != wanted:
        why += f"; bounded to [{spec.min_replicas}, {spec.max_replicas}]"
    return bounded, why, busy


@dataclass
class _History:
    since: float                 # when this history began: until a scale-down window has passed,
    start: int                   # the size it began with counts as a recommendation
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, recommendation)


class Autoscaler:
    """Keeps each OmniDeployment's recent recommendations (in memory; thread-safe)."""

    def __init__(self) -> None:
        self._histories: dict[str, _History] = {}
        self._lock = threading.Lock()

    def forget(self, key: str) -> None:
        with self._lock:
            self._histories.pop(key, None)

    def decide(self, key: str, spec: AutoscalingSpec, current: int, pods: list[WorkerPod], load: Load | None,
               now: float) -> Decision:
        if not spec.min_replicas <= current <= spec.max_replicas:
            bounded = _clamp(current, spec)
            with self._lock:
                self._histories[key] = _History(now, bounded)
            busy = sum(1 for p in pods if p.ready and p.busy and not p.draining and not p.terminating)
            return Decision(bounded, bounded, CLAMPED, f"spec.workers.replicas={current} is outside autoscaling bounds "
                            f"[{spec.min_replicas}, {spec.max_replicas}]; set to {bounded}", busy)
        wanted, why, busy = recommend(spec, current, pods, load)
        window = max(spec.scale_up_stabilization_seconds, spec.scale_down_stabilization_seconds)
        with self._lock:
            history = self._histories.setdefault(key, _History(now, current))
            history.samples = [(t, r) for t, r in history.samples if now - t <= window] + [(now, wanted)]
            up = [r for t, r in history.samples if now - t <= spec.scale_up_stabilization_seconds]
            down = [r for t, r in history.samples if now - t <= spec.scale_down_stabilization_seconds]
            if now - history.since < spec.scale_down_stabilization_seconds:
                down.append(history.start)
        if wanted > current:
            replicas = max(current, min(up))
            if replicas > current:
                return Decision(replicas, wanted, SCALE_UP, why, busy)
            return Decision(current, wanted, HOLD, f"{why}; held by the {spec.scale_up_stabilization_seconds}s scale-up window", busy)
        if wanted < current:
            replicas = min(current, max(down))
            if replicas < current:
                return Decision(replicas, wanted, SCALE_DOWN, why, busy)
            return Decision(current, wanted, HOLD,
                            f"{why}; held by the {spec.scale_down_stabilization_seconds}s scale-down window", busy)
        return Decision(current, wanted, HOLD, why, busy)
