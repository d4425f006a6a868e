"""The ETA benchmark's replay: each estimator sees exactly what the gateway knew when a request arrived."""

from __future__ import annotations

from bench.eta_trace import Outcome, fifo_outcomes, replay
from bench.trace import TraceItem, synthetic_trace
from omnikube.protocol import TaskType
from omnikube_gateway.eta import Running


class Spy:
    """An estimator that remembers what it was told and answers a fixed 10 s."""

    def __init__(self) -> None:
        self.recorded: list[tuple[TaskType, float]] = []
        self.asked: list[tuple[list[Running | None], list[TaskType]]] = []

    def record(self, task_type: TaskType, duration_s: float) -> None:
        self.recorded.append((task_type, duration_s))

    def expected(self, task_type: TaskType) -> float:
        return 10.0

    def remaining(self, running: Running) -> float:
        return 10.0

    def queue_waits(self, workers, queued) -> list[float]:
        self.asked.append((list(workers), list(queued)))
        return [10.0] * len(queued)


def outcome(index: int, task_type: TaskType, arrived: float, started: float, ended: float) -> Outcome:
    queued = started - arrived > 1.0 if task_type in (TaskType.audio_duplex, TaskType.omni_duplex) else None
    return Outcome(TraceItem(index, arrived, task_type, ended - started), arrived, started, ended, queued)


def test_a_queued_request_is_predicted_from_the_running_sessions_the_tickets_ahead_and_only_ended_durations():
    outcomes = [
        outcome(0, TaskType.chat, 0.0, 0.0, 8.0),           # ended before the third arrives: recorded
        outcome(1, TaskType.omni_duplex, 9.0, 9.0, 60.0),   # holds the only worker
        outcome(2, TaskType.chat, 20.0, 60.0, 70.0),        # queued behind it
        outcome(3, TaskType.audio_duplex, 30.0, 70.0, 90.0),  # queued behind both
    ]
    spy = Spy()
    predictions = replay(outcomes, workers=1, compression=1.0, estimator=spy)
    assert [p.outcome.item.index for p in predictions] == [2, 3]
    assert [p.actual_s for p in predictions] == [40.0, 40.0]
    assert spy.recorded == [(TaskType.chat, 8.0)]
    assert spy.asked == [
        ([Running(TaskType.omni_duplex, 11.0)], [TaskType.chat]),
        ([Running(TaskType.omni_duplex, 21.0)], [TaskType.chat, TaskType.audio_duplex]),
    ]


def test_an_idealised_fifo_run_never_starts_a_request_before_it_arrives_or_runs_more_than_the_workers():
    trace = synthetic_trace(3, 120, 2, 0.9)
    outcomes = fifo_outcomes(trace, workers=2, seed=3)
    assert all(o.arrived <= o.started < o.ended for o in outcomes)
    starts = sorted(o.started for o in outcomes)
    assert starts == [o.started for o in sorted(outcomes, key=lambda o: o.arrived)]  # FIFO
    for o in outcomes:
        assert sum(1 for other in outcomes if other.started <= o.started < other.ended) <= 2
