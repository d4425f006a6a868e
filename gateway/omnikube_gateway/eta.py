"""Queue-wait estimators, as pure code: no clock, no I/O, no gateway state.

Two estimators share one interface so that a recorded trace can be replayed through both:

- `SeedEstimator` is the original service's rule (gateway.md §5): per-type baselines, replaced by
  an exponential moving average once a type has `min_samples` samples; a running session has
  `eta(type) - elapsed` left, or a flat 15 s once it overran; tickets are laid onto a min-heap of
  busy workers in queue order; with no busy worker every ticket gets 0.
- `ResidualEstimator` is Omnikube's. A wait is a sum of uncertain durations, and clients judge an
  ETA by how far off it was *relative* to the wait, so it estimates the wait's distribution and
  answers its median rather than adding up means (heavy-tailed durations make means far longer
  than the typical wait). Per task type it keeps the recent durations; a running session's
  remaining time is drawn from the durations longer than its age (so a session that already ran
  long is expected to run longer), or, past the last few samples or with none yet, from a
  log-normal fitted to them (the seed's baseline as its mean until a type has samples). A fixed
  set of stratified draws lays the queue onto every usable worker, idle ones included, in FIFO
  order; each ticket's ETA is the median of its wait over the draws. Draws are seeded, so the
  same state always gives the same answer.

Token budgets (ours only). A chat or streaming chat asks for at most `max_new_tokens`, and the
workers report how long their generations take (`ms_per_token` and `generation_overhead_ms` on
`/health`, fitted by each worker over its own chats); the dispatcher turns the two into a budget,
the longest such a request should hold a worker. Ours then models a budgeted session's duration as
its budget times the fraction of it that sessions of its type really used (learned from the ended
ones, `record(..., budget_s=)`), with the same conditional-residual draws; until a type has enough
such samples it takes the type's durations capped at the budget. The seed ignores budgets.

Only durations of sessions that ended normally are fed in (the dispatcher never records failed,
cancelled or aborted ones), and paused time is excluded by the caller.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence

import numpy as np

from omnikube.config import ServiceSection
from omnikube.protocol import TaskType

OVERRUN_FALLBACK_S = 15.0  # the seed's remaining time for a session past its estimate
MIN_REMAINING_S = 1.0      # ours: a running session's reported remaining time is at least this
DEFAULT_OTHER_S = 30.0     # the seed's baseline for labels without one
SAMPLE_WINDOW = 256        # durations kept per type

DRAWS = 64                 # Monte-Carlo draws per estimate: ~5 % noise on a median, cheap to lay out
PRIOR_SIGMA = 1.0          # log-normal spread assumed before a type has samples
PRIOR_WEIGHT = 3           # pseudo-samples of PRIOR_SIGMA in a fitted spread
MIN_TAIL = 8               # empirical residual needs this many longer samples, else the fitted tail
MC_TICKETS = 32            # tickets laid out per draw; deeper ones continue from the medians
DRAW_SEED = 20260101


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
    """A session holding a worker: its type, how long it has been active (s) and its budget (s), if known."""

    task_type: TaskType
    elapsed_s: float
    budget_s: float | None = None


@dataclass(frozen=True)
class Job:
    """A queued request with a token budget: its type and the longest it should hold a worker (s)."""

    task_type: TaskType
    budget_s: float | None = None


Queued = TaskType | Job


def _type_of(job: Queued) -> TaskType:
    return job.task_type if isinstance(job, Job) else job


def _usable(budget_s: float | None) -> float | None:
    return budget_s if budget_s is not None and budget_s > 0 and math.isfinite(budget_s) else None


def _budget_of(job: Queued) -> float | None:
    return _usable(job.budget_s) if isinstance(job, Job) else None


class Estimator(Protocol):
    def configure(self, baselines: Mapping[TaskType, float], alpha: float | None = None) -> None: ...
    def record(self, task_type: TaskType, duration_s: float, budget_s: float | None = None) -> None: ...
    def expected(self, task_type: TaskType) -> float: ...
    def remaining(self, running: Running) -> float: ...
    def queue_waits(self, workers: Sequence[Running | None], queued: Sequence[Queued]) -> list[float]: ...


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

    def configure(self, baselines: Mapping[TaskType, float], alpha: float | None = None) -> None:
        """New baselines (and EMA weight) from `PUT /api/config/eta`; the only way they change."""
        self.baselines.update(baselines)
        if alpha is not None:
            self.alpha = alpha

    def record(self, task_type: TaskType, duration_s: float, budget_s: float | None = None) -> None:
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

    def queue_waits(self, workers: Sequence[Running | None], queued: Sequence[Queued]) -> list[float]:
        """`workers`: one entry per usable worker, None when idle. The seed ignores idle workers and budgets."""
        heap = [self.remaining(w) for w in workers if w is not None]
        return _lay_out(heap, [_type_of(j) for j in queued], self.expected, empty_value=0.0)


def _lay_out(heap: list[float], queued: Iterable, expected, *, empty_value: float) -> list[float]:
    """Hand queued tickets, in order, to whichever worker frees first."""
    queued = list(queued)
    if not heap:
        return [empty_value] * len(queued)
    heapq.heapify(heap)
    waits = []
    for job in queued:
        t = heapq.heappop(heap)
        waits.append(round(max(0.0, t), 1))
        heapq.heappush(heap, t + expected(job))
    return waits


# -- Omnikube's estimator ------------------------------------------------------------------------

# Stratified quantile levels, one per draw; each worker and ticket gets its own fixed shuffle of
# them (a Latin hypercube), so draws cover every level yet are independent across sessions.
_LEVELS = (np.arange(DRAWS) + 0.5) / DRAWS
_LOG_ABOVE_LEVELS = np.log1p(-_LEVELS)
_MIDDLE = [(DRAWS - 1) // 2, DRAWS // 2]
_Z_GRID = np.linspace(-37.0, 9.0, 9201)
_LOG_CDF = np.array([math.log(0.5 * math.erfc(-z / math.sqrt(2))) for z in _Z_GRID])


def _normal_quantile_from_log_cdf(log_p: np.ndarray) -> np.ndarray:
    """z with log Φ(z) = log_p; a table keeps it vectorised and exact enough far into the tails."""
    return np.interp(log_p, _LOG_CDF, _Z_GRID)


def _log_survival(z: np.ndarray) -> np.ndarray:
    """log(1 - Φ(z)) = log Φ(-z), from the same table (clamped far in the tails)."""
    return np.interp(-z, _Z_GRID, _LOG_CDF)


class _Shuffles:
    """Column j of `take(n)` is the j-th fixed permutation of the draw indices."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng(DRAW_SEED)
        self._columns = np.empty((DRAWS, 0), dtype=np.intp)

    def take(self, n: int) -> np.ndarray:
        if self._columns.shape[1] < n:
            grow = max(n, 2 * self._columns.shape[1]) - self._columns.shape[1]
            # Column by column from the stream, so column j is the same however the table grew.
            fresh = np.argsort(self._rng.random((grow, DRAWS)).T, axis=0)
            self._columns = np.concatenate([self._columns, fresh], axis=1)
        return self._columns[:, :n]


class Durations:
    """What is known of one type's durations: the sorted samples (if enough) and a log-normal fit."""

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> Durations:
        values = np.sort(np.fromiter(samples, dtype=float))
        logs = np.log(values)
        # Few samples fit too tight a spread: PRIOR_WEIGHT pseudo-samples of PRIOR_SIGMA widen it.
        spread = float(((logs - logs.mean()) ** 2).sum())
        sigma = math.sqrt((spread + PRIOR_WEIGHT * PRIOR_SIGMA ** 2) / (len(logs) - 1 + PRIOR_WEIGHT))
        return cls(values, float(logs.mean()), sigma)

    @classmethod
    def from_mean(cls, mean: float) -> Durations:
        """Before samples: a log-normal of spread PRIOR_SIGMA with this mean."""
        return cls(None, math.log(mean) - PRIOR_SIGMA ** 2 / 2, PRIOR_SIGMA)

    def __init__(self, values: np.ndarray | None, mu: float, sigma: float) -> None:
        self.values, self.mu, self.sigma = values, mu, sigma
        self.mean = float(values.mean()) if values is not None else math.exp(mu + sigma ** 2 / 2)
        # One duration per quantile level, for queued tickets of this type.
        if values is not None:
            self.draws = values[(_LEVELS * len(values)).astype(np.intp)]
        else:
            self.draws = np.exp(mu + sigma * _normal_quantile_from_log_cdf(np.log(_LEVELS)))

    def residual_draws(self, elapsed: np.ndarray) -> np.ndarray:
        """Remaining time of sessions that ran `elapsed` so far: one row per level, one column each."""
        if self.values is None:
            return self._tail(elapsed)
        start = np.searchsorted(self.values, elapsed, side="right")
        longer = len(self.values) - start
        tail = longer < MIN_TAIL
        if not tail.any():
            return self._longer(elapsed, start, longer)
        draws = np.empty((DRAWS, len(elapsed)))
        seen = ~tail
        if seen.any():
            draws[:, seen] = self._longer(elapsed[seen], start[seen], longer[seen])
        draws[:, tail] = self._tail(elapsed[tail])
        return draws

    def _longer(self, elapsed: np.ndarray, start: np.ndarray, longer: np.ndarray) -> np.ndarray:
        """The recorded durations longer than each age, less the age, one per level."""
        return self.values[start + (_LEVELS[:, None] * longer).astype(np.intp)] - elapsed

    def _tail(self, elapsed: np.ndarray) -> np.ndarray:
        """The fitted log-normal's remaining time beyond each age, split into the same levels."""
        age = np.maximum(elapsed, 1e-9)
        log_survival = _log_survival((np.log(age) - self.mu) / self.sigma)
        z = -_normal_quantile_from_log_cdf(_LOG_ABOVE_LEVELS[:, None] + log_survival[None, :])
        return np.maximum(np.exp(self.mu + self.sigma * z) - age, 0.0)


class ResidualEstimator(SeedEstimator):
    """Omnikube's estimator: the median of a Monte-Carlo wait over conditional residual lives."""

    def __init__(self, baselines: Mapping[TaskType, float], *, alpha: float = 0.3, min_samples: int = 3):
        super().__init__(baselines, alpha=alpha, min_samples=min_samples)
        self._fits: dict[TaskType, tuple[tuple[int, float], Durations]] = {}
        # Per type, duration / budget of ended sessions that had a budget, and their fit.
        self._used: dict[TaskType, deque[float]] = {t: deque(maxlen=SAMPLE_WINDOW) for t in TaskType}
        self._used_counts: dict[TaskType, int] = {t: 0 for t in TaskType}
        self._used_fits: dict[TaskType, tuple[int, Durations]] = {}
        self._shuffles = _Shuffles()

    def record(self, task_type: TaskType, duration_s: float, budget_s: float | None = None) -> None:
        super().record(task_type, duration_s)
        budget = _usable(budget_s)
        if budget is not None and duration_s > 0 and math.isfinite(duration_s):
            self._used[task_type].append(duration_s / budget)
            self._used_counts[task_type] += 1

    def durations(self, task_type: TaskType) -> Durations:
        baseline = self.baselines.get(task_type, DEFAULT_OTHER_S)
        stats = self.stats[task_type]
        key = (stats.samples, baseline)  # the baseline can change at runtime (PUT /api/config/eta)
        cached = self._fits.get(task_type)
        if cached is not None and cached[0] == key:
            return cached[1]
        if stats.samples >= self.min_samples and stats.window:
            fit = Durations.from_samples(stats.window)
        else:
            fit = Durations.from_mean(baseline)
        self._fits[task_type] = (key, fit)
        return fit

    def budget_used(self, task_type: TaskType) -> Durations | None:
        """The fraction of their budget that sessions of this type used, once enough have ended."""
        count = self._used_counts[task_type]
        if count < self.min_samples:
            return None
        cached = self._used_fits.get(task_type)
        if cached is None or cached[0] != count:
            cached = self._used_fits[task_type] = (count, Durations.from_samples(self._used[task_type]))
        return cached[1]

    def expected(self, task_type: TaskType) -> float:
        return self.durations(task_type).mean

    def _expected_job(self, job: Queued) -> float:
        task_type, budget = _type_of(job), _budget_of(job)
        if budget is None:
            return self.expected(task_type)
        used = self.budget_used(task_type)
        return budget * used.mean if used is not None else min(self.expected(task_type), budget)

    def remaining(self, running: Running) -> float:
        """The median remaining time of one running session."""
        draws = self._residuals([running])[:, 0]
        return max(MIN_REMAINING_S, round(float(np.median(draws)), 1))

    def queue_waits(self, workers: Sequence[Running | None], queued: Sequence[Queued]) -> list[float]:
        if not queued:
            return []
        # No usable worker at all: assume one appears now rather than claim 0 s for everyone.
        free_at = self._residuals(workers) if workers else np.zeros((DRAWS, 1))
        return [round(max(0.0, w), 1) for w in self._lay_out(free_at, list(queued))]

    def _residuals(self, workers: Sequence[Running | None]) -> np.ndarray:
        """When each worker frees, per draw (rows) and worker (columns); idle ones at 0."""
        by_level = np.zeros((DRAWS, len(workers)))
        groups: dict[tuple[TaskType, bool], list[int]] = {}
        for column, worker in enumerate(workers):
            if worker is not None:
                groups.setdefault((worker.task_type, _usable(worker.budget_s) is not None), []).append(column)
        for (task_type, budgeted), columns in groups.items():
            elapsed = np.array([max(0.0, workers[c].elapsed_s) for c in columns])
            if not budgeted:
                by_level[:, columns] = self.durations(task_type).residual_draws(elapsed)
                continue
            budgets = np.array([workers[c].budget_s for c in columns])
            used = self.budget_used(task_type)
            if used is not None:
                by_level[:, columns] = used.residual_draws(elapsed / budgets) * budgets
            else:
                left = np.maximum(budgets - elapsed, MIN_REMAINING_S)
                by_level[:, columns] = np.minimum(self.durations(task_type).residual_draws(elapsed), left)
        return by_level[self._shuffles.take(len(workers)), np.arange(len(workers))]

    def _ticket_draws(self, job: Queued) -> np.ndarray:
        """One duration per quantile level for a queued ticket."""
        task_type, budget = _type_of(job), _budget_of(job)
        if budget is None:
            return self.durations(task_type).draws
        used = self.budget_used(task_type)
        if used is not None:
            return used.draws * budget
        return np.minimum(self.durations(task_type).draws, budget)

    def _lay_out(self, free_at: np.ndarray, queued: Sequence[Queued]) -> list[float]:
        """Median start of each queued ticket, FIFO onto whichever worker frees first.

        The first MC_TICKETS tickets are laid out per draw; deeper ones, whose waits are sums of
        many durations and so far less uncertain, continue from the per-rank medians of the
        workers' free times with mean durations (the two agree on the boundary ticket).
        """
        sampled = list(queued[:MC_TICKETS])
        per_job: dict[Queued, np.ndarray] = {}
        for job in sampled:
            if job not in per_job:
                per_job[job] = self._ticket_draws(job)
        by_level = np.stack([per_job[j] for j in sampled], axis=1)
        workers = free_at.shape[1]
        lengths = by_level[self._shuffles.take(workers + len(sampled))[:, workers:], np.arange(len(sampled))]
        flat = free_at.ravel().copy()
        grid = flat.reshape(DRAWS, workers)  # a view: the lay-out writes through `flat`
        row_offsets = np.arange(DRAWS) * workers
        starts = np.empty((DRAWS, len(sampled)))
        for j in range(len(sampled)):
            first = grid.argmin(axis=1) + row_offsets
            start = flat[first]
            starts[:, j] = start
            flat[first] = start + lengths[:, j]
        waits = _medians(starts).tolist()
        if len(queued) > MC_TICKETS:
            heap = _medians(np.sort(grid, axis=1)).tolist()
            waits += _lay_out(heap, queued[MC_TICKETS:], self._expected_job, empty_value=0.0)
        return waits


def _medians(draws: np.ndarray) -> np.ndarray:
    """Median of each column (np.median's checks cost more than the sort at this size)."""
    middle = np.sort(draws, axis=0)[_MIDDLE]
    return (middle[0] + middle[1]) / 2
