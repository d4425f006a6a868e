"""A replayable synthetic workload: seeded Poisson arrivals, a mix of task types, heavy-tailed
durations. Times are in trace seconds (real-world scale); the driver compresses them.

Durations are log-normal (median per type, sigma ~1): most sessions are short, a few run for many
times the median, which is what makes a plain moving average a poor predictor of waits. Medians
are chosen so that the means sit near the seed's baselines (chat 15 s, streaming 20 s, audio
duplex 120 s, omni duplex 90 s): the seed's defaults start out about right on average.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from omnikube.protocol import TaskType

# type -> (share of arrivals, median duration s, log-normal sigma, cap s)
MIX: dict[TaskType, tuple[float, float, float, float]] = {
    TaskType.chat: (0.35, 9.0, 0.9, 52.0),
    TaskType.streaming: (0.25, 12.0, 0.9, 52.0),
    TaskType.audio_duplex: (0.20, 60.0, 1.1, 900.0),
    TaskType.omni_duplex: (0.20, 45.0, 1.1, 900.0),
}


@dataclass(frozen=True)
class TraceItem:
    index: int
    arrival_s: float
    task_type: TaskType
    duration_s: float


def mean_duration() -> float:
    """Expected holding time of one arrival under MIX (ignoring the caps)."""
    return sum(share * median * math.exp(sigma ** 2 / 2) for share, median, sigma, _ in MIX.values())


def synthetic_trace(seed: int, count: int, workers: int, load: float) -> list[TraceItem]:
    """`count` arrivals at a rate that keeps `workers` busy `load` of the time on average."""
    rng = random.Random(seed)
    rate = load * workers / mean_duration()
    types = list(MIX)
    shares = [MIX[t][0] for t in types]
    items = []
    now = 0.0
    for index in range(count):
        now += rng.expovariate(rate)
        task_type = rng.choices(types, shares)[0]
        items.append(TraceItem(index, now, task_type, sample_duration(rng, task_type)))
    return items


def sample_duration(rng: random.Random, task_type: TaskType) -> float:
    """One duration of `task_type` as the trace draws it."""
    _, median, sigma, cap = MIX[task_type]
    return min(cap, rng.lognormvariate(math.log(median), sigma))
