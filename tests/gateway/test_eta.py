"""Both ETA estimators as pure functions: the seed's rule and Omnikube's residual estimator."""

from __future__ import annotations

import pytest

from omnikube.config import ServiceSection
from omnikube.protocol import TaskType
from omnikube_gateway.eta import ResidualEstimator, Running, SeedEstimator, baselines_from_config

BASELINES = baselines_from_config(ServiceSection())


def test_the_seed_rule_reproduces_the_spec_example():
    seed = SeedEstimator(BASELINES)
    waits = seed.queue_waits([Running(TaskType.omni_duplex, 30.0)], [TaskType.chat, TaskType.audio_duplex])
    assert waits == [60.0, 75.0]


def test_the_seed_rule_uses_a_flat_fifteen_seconds_for_an_overrun_and_zero_with_no_busy_worker():
    seed = SeedEstimator(BASELINES)
    assert seed.queue_waits([Running(TaskType.chat, 100.0)], [TaskType.chat]) == [15.0]
    assert seed.queue_waits([None, None], [TaskType.chat, TaskType.chat]) == [0.0, 0.0]


def test_the_seed_ema_replaces_the_baseline_after_min_samples():
    seed = SeedEstimator(BASELINES, alpha=0.5, min_samples=3)
    for duration in (10.0, 20.0):
        seed.record(TaskType.chat, duration)
    assert seed.expected(TaskType.chat) == 15.0  # still the baseline (2 samples)
    seed.record(TaskType.chat, 30.0)
    assert seed.expected(TaskType.chat) == pytest.approx(0.5 * 30 + 0.5 * (0.5 * 20 + 0.5 * 10))


def test_the_residual_estimator_keeps_the_baseline_floor_without_samples():
    ours = ResidualEstimator(BASELINES)
    assert ours.remaining(Running(TaskType.omni_duplex, 30.0)) == 60.0
    assert ours.remaining(Running(TaskType.omni_duplex, 300.0)) == 1.0


def test_the_residual_estimator_predicts_long_remaining_time_for_a_session_that_already_ran_long():
    ours = ResidualEstimator(BASELINES)
    for duration in [5.0] * 8 + [200.0] * 2:  # heavy tail: most short, a few very long
        ours.record(TaskType.chat, duration)
    old = Running(TaskType.chat, 60.0)
    assert ours.remaining(old) == pytest.approx(140.0)


def test_the_residual_estimator_counts_idle_workers_and_never_answers_zero_for_an_empty_pool():
    ours = ResidualEstimator(BASELINES)
    assert ours.queue_waits([None, Running(TaskType.chat, 5.0)], [TaskType.chat, TaskType.chat]) == [0.0, 10.0]
    assert ours.queue_waits([], [TaskType.chat, TaskType.chat]) == [0.0, 15.0]


def test_non_positive_or_infinite_durations_are_not_recorded():
    ours = ResidualEstimator(BASELINES)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        ours.record(TaskType.chat, bad)
    assert ours.stats[TaskType.chat].samples == 0
