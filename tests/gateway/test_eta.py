"""Both ETA estimators as pure functions: the seed's rule and Omnikube's residual estimator."""

from __future__ import annotations

import pytest

from omnikube.config import ServiceSection
from omnikube.protocol import TaskType
from omnikube_gateway.eta import MC_TICKETS, Job, ResidualEstimator, Running, SeedEstimator, baselines_from_config

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


def heavy_tailed(estimator, task_type=TaskType.chat, short=5.0, long=200.0, count=100):
    """Nine in ten sessions short, one in ten very long: the mean is five times the median."""
    for i in range(count):
        estimator.record(task_type, long if i % 10 == 9 else short)
    return estimator


def test_before_any_sample_the_residual_estimator_s_mean_is_the_seed_s_baseline():
    ours = ResidualEstimator(BASELINES)
    assert ours.expected(TaskType.omni_duplex) == pytest.approx(90.0)
    fresh = ours.remaining(Running(TaskType.omni_duplex, 0.0))
    assert 30.0 < fresh < 90.0  # a log-normal with mean 90 s has its median well below 90 s


def test_a_long_running_duplex_session_is_expected_to_run_longer_than_a_fresh_one():
    ours = ResidualEstimator(BASELINES)
    for i in range(200):
        ours.record(TaskType.audio_duplex, 20.0 * 1.03 ** i)  # 20 s to ~7 min, spread out
    fresh = ours.remaining(Running(TaskType.audio_duplex, 0.0))
    old = ours.remaining(Running(TaskType.audio_duplex, 240.0))
    assert old > fresh


def test_a_session_past_every_recorded_duration_still_has_time_left_that_grows_with_its_age():
    ours = heavy_tailed(ResidualEstimator(BASELINES))
    older, oldest = ours.remaining(Running(TaskType.chat, 1000.0)), ours.remaining(Running(TaskType.chat, 3000.0))
    assert 1.0 < older < oldest


def test_a_heavy_tailed_type_s_eta_is_its_typical_duration_not_its_mean():
    ours = heavy_tailed(ResidualEstimator(BASELINES))
    waits = ours.queue_waits([None], [TaskType.chat, TaskType.chat])
    assert ours.expected(TaskType.chat) == pytest.approx(24.5)
    assert waits == [0.0, 5.0]  # behind one 5-s-or-200-s chat: 5 s is right nine times in ten


def test_the_residual_estimator_counts_idle_workers_and_never_answers_zero_for_an_empty_pool():
    ours = ResidualEstimator(BASELINES)
    behind_busy = ours.queue_waits([None, Running(TaskType.chat, 5.0)], [TaskType.chat, TaskType.chat])
    assert behind_busy[0] == 0.0 and behind_busy[1] > 0.0
    no_pool = ours.queue_waits([], [TaskType.chat, TaskType.chat])
    assert no_pool[0] == 0.0 and no_pool[1] > 0.0


def test_waits_never_shrink_along_a_queue_deeper_than_the_sampled_part():
    ours = heavy_tailed(ResidualEstimator(BASELINES))
    workers = [Running(TaskType.chat, float(age)) for age in range(0, 40, 5)]
    waits = ours.queue_waits(workers, [TaskType.chat, TaskType.omni_duplex] * (MC_TICKETS + 10))
    assert waits == sorted(waits) and waits[-1] > waits[MC_TICKETS]


def test_the_same_queue_and_history_always_get_the_same_etas():
    ours = heavy_tailed(ResidualEstimator(BASELINES))
    workers = [Running(TaskType.chat, 3.0), Running(TaskType.omni_duplex, 50.0), None]
    queued = [TaskType.omni_duplex, TaskType.chat, TaskType.chat, TaskType.audio_duplex]
    assert ours.queue_waits(workers, queued) == ours.queue_waits(workers, queued)
    again = heavy_tailed(ResidualEstimator(BASELINES))
    assert again.queue_waits(workers, queued) == ours.queue_waits(workers, queued)


def test_a_baseline_changed_at_runtime_moves_the_eta_of_a_type_without_samples():
    ours = ResidualEstimator(BASELINES)
    before = ours.queue_waits([Running(TaskType.omni_duplex, 10.0)], [TaskType.chat])
    ours.baselines[TaskType.omni_duplex] = 900.0
    after = ours.queue_waits([Running(TaskType.omni_duplex, 10.0)], [TaskType.chat])
    assert after[0] > 5 * before[0]


def test_recorded_durations_replace_the_baseline_prior():
    ours = ResidualEstimator(BASELINES)
    for _ in range(20):
        ours.record(TaskType.omni_duplex, 12.0)
    assert ours.expected(TaskType.omni_duplex) == pytest.approx(12.0)
    assert ours.queue_waits([None], [TaskType.omni_duplex, TaskType.chat]) == [0.0, 12.0]


def test_non_positive_or_infinite_durations_are_not_recorded():
    ours = ResidualEstimator(BASELINES)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        ours.record(TaskType.chat, bad)
    assert ours.stats[TaskType.chat].samples == 0


def test_an_estimator_that_saw_a_big_pool_first_answers_a_small_one_as_a_fresh_one_does():
    workers = [Running(TaskType.chat, 3.0), Running(TaskType.omni_duplex, 50.0)]
    queued = [TaskType.chat, TaskType.omni_duplex, TaskType.chat]
    seasoned = heavy_tailed(ResidualEstimator(BASELINES))
    seasoned.queue_waits([Running(TaskType.chat, 1.0)] * 40, [TaskType.chat] * 70)
    assert seasoned.queue_waits(workers, queued) == heavy_tailed(ResidualEstimator(BASELINES)).queue_waits(workers, queued)


# -- token budgets: a chat's max_new_tokens at the pace its worker reports ----------------------

def test_a_running_chat_is_expected_to_end_by_its_budget_whatever_its_type_s_tail():
    ours = heavy_tailed(ResidualEstimator(BASELINES))  # chats: 5 s, or 200 s one in ten
    unbounded = ours.queue_waits([Running(TaskType.chat, 6.0)], [TaskType.chat])[0]
    bounded = ours.queue_waits([Running(TaskType.chat, 6.0, budget_s=10.0)], [TaskType.chat])[0]
    assert bounded <= 4.0 < unbounded


def test_chats_that_used_half_their_budget_make_a_queued_chat_last_half_of_its_own():
    ours = ResidualEstimator(BASELINES)
    for budget in (10.0, 20.0, 40.0, 30.0, 16.0):
        ours.record(TaskType.chat, budget / 2, budget_s=budget)
    waits = ours.queue_waits([None], [Job(TaskType.chat, budget_s=60.0), TaskType.chat])
    assert waits[1] == pytest.approx(30.0, rel=0.05)


def test_the_seed_rule_ignores_budgets():
    seed = SeedEstimator(BASELINES)
    running = [Running(TaskType.chat, 3.0, budget_s=4.0)]
    assert seed.queue_waits(running, [Job(TaskType.chat, 100.0)]) == seed.queue_waits(
        [Running(TaskType.chat, 3.0)], [TaskType.chat])
