"""Queue-wait estimators, as pure code: no clock, no I/O, no gateway state.

Two estimators share one interface so that a recorded trace can be replayed through both:

- `SeedEstimator` is the original service's rule (gateway.md §5): per-type baselines, replaced by
  an exponential moving average once a type has `min_samples` samples; a running session has
  `eta(type) - elapsed` left, or a flat 15 s once it overran; tickets are laid onto a min-heap of
  busy workers in queue order; with no busy worker every ticket gets 0.
- `ResidualEstimator` is Omnikube's: the seed's baselines and EMA remain the floor for types
  with few samples, but a running session's remaining time is the *conditional* mean residual of
  the observed durations given how long it has already run (heavy-tailed sessions that ran long
  tend to run longer; short ones left the sample), and the simulation includes idle and busy
  workers alike, so an idle-but-about-to-be-taken worker is not invisible.

Only durations of sessions that ended normally are fed in (the dispatcher never records failed,
cancelled or aborted ones), and paused time is excluded by the caller.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence

from omnikube.config import ServiceSection
from omnikube.protocol import TaskType

OVERRUN_FALLBACK_S = 15.0  # the seed's remaining time for a session past its estimate
MIN_REMAINING_S = 1.0      # ours: a running session always has at least this left
DEFAULT_OTHER_S = 30.0     # the seed's baseline for labels without one
SAMPLE_WINDOW = 256        # durations kept per type for the residual estimate


def baselines_from_config(service: ServiceSection) -> dict[TaskType, float]:
    return {
        TaskType.chat: service.eta_chat_s,
        TaskType.streaming: service.eta_streaming_s,
        TaskType.half_duplex: service.eta_half_duplex_s,
        TaskType.audio_duplex: service.eta_audio_duplex_s,
        TaskType.omni_duplex: service.eta_omni_duplex_s,
    }


@dataclass(frozen=True)
class Running:
    """A session holding a worker: its type and how long it has been active (s)."""

    task_type: TaskType
    elapsed_s: float


class Estimator(Protocol):
    def record(self, task_type: TaskType, duration_s: float) -> None: ...
    def expected(self, task_type: TaskType) -> float: ...
    def remaining(self, running: Running) -> float: ...
    def queue_waits(self, workers: Sequence[Running | None], queued: Sequence[TaskType]) -> list[float]: ...


@dataclass
class _TypeStats:
    ema: float | None = None
    samples: int = 0
    window: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE_WINDOW))


class SeedEstimator:
    """The original's baseline + EMA rule, kept for comparison and for `/api/config/eta`."""

    def __init__(self, baselines: Mapping[TaskType, float], *, alpha: float = 0.3, min_samples: int = 3):
        self.baselines: dict[TaskType, float] = dict(baselines)
        self.alpha = alpha
        self.min_samples = min_samples
        self.stats: dict[TaskType, _TypeStats] = {t: _TypeStats() for t in TaskType}

    def record(self, task_type: TaskType, duration_s: float) -> None:
        if not duration_s > 0 or not math.isfinite(duration_s):
            return
        stats = self.stats[task_type]
        stats.ema = duration_s if stats.ema is None else self.alpha * duration_s + (1 - self.alpha) * stats.ema
        stats.samples += 1
        stats.window.append(duration_s)

    def expected(self, task_type: TaskType) -> float:
        stats = self.stats[task_type]
        if stats.ema is not None and stats.samples >= self.min_samples:
            return stats.ema
        return self.baselines.get(task_type, DEFAULT_OTHER_S)

    def remaining(self, running: Running) -> float:
        eta = self.expected(running.task_type)
        return eta - running.elapsed_s if running.elapsed_s < eta else OVERRUN_FALLBACK_S

    def queue_waits(self, workers: Sequence[Running | None], queued: Sequence[TaskType]) -> list[float]:
        """`workers`: one entry per usable worker, None when idle. The seed ignores idle workers."""
        heap = [self.remaining(w) for w in workers if w is not None]
        return _lay_out(heap, queued, self.expected, empty_value=0.0)


class ResidualEstimator(SeedEstimator):
    """Omnikube's estimator: conditional residual life for running sessions, idle workers count."""

    def expected(self, task_type: TaskType) -> float:
        stats = self.stats[task_type]
        if stats.samples >= self.min_samples and stats.window:
            # The mean, not the EMA: for a sum of future sessions the mean is the unbiased choice.
            return sum(stats.window) / len(stats.window)
        return super().expected(task_type)

    def remaining(self, running: Running) -> float:
        stats = self.stats[running.task_type]
        elapsed = max(0.0, running.elapsed_s)
        if stats.samples >= self.min_samples and stats.window:
            longer = [d - elapsed for d in stats.window if d > elapsed]
            if longer:
                return max(MIN_REMAINING_S, sum(longer) / len(longer))
            # Past every sample seen: heavy tails say the remaining life grows with the age.
            return max(MIN_REMAINING_S, 0.25 * elapsed)
        return max(MIN_REMAINING_S, self.expected(running.task_type) - elapsed)

    def queue_waits(self, workers: Sequence[Running | None], queued: Sequence[TaskType]) -> list[float]:
        heap = [0.0 if w is None else self.remaining(w) for w in workers]
        if not heap:
            # No usable worker at all: assume one appears now rather than claim 0 s for everyone.
            heap = [0.0]
        return _lay_out(heap, queued, self.expected, empty_value=0.0)


def _lay_out(heap: list[float], queued: Iterable[TaskType], expected, *, empty_value: float) -> list[float]:
    """Hand queued tickets, in order, to whichever worker frees first."""
    queued = list(queued)
    if not heap:
        return [empty_value] * len(queued)
    heapq.heapify(heap)
    waits = []
    for task_type in queued:
        t = heapq.heappop(heap)
        waits.append(round(max(0.0, t), 1))
        heapq.heappush(heap, t + expected(task_type))
    return waits
