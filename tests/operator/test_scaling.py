"""The scaling planner: which worker pods are created, drained, brought back or deleted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from omnikube_operator.scaling import WorkerPod, plan

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def idle(index: int, **kw) -> WorkerPod:
    return WorkerPod(name=f"w-{index}", index=index, ready=True, worker_status="idle", **kw)


def busy(index: int, **kw) -> WorkerPod:
    return WorkerPod(name=f"w-{index}", index=index, ready=True, worker_status="duplex_active", **kw)


def pending(index: int, **kw) -> WorkerPod:
    return WorkerPod(name=f"w-{index}", index=index, ready=False, **kw)


def names(items) -> list[str]:
    """Pod names of a plan list (whose items are pods or (pod, reason) pairs)."""
    return sorted((item if isinstance(item, WorkerPod) else item[0]).name for item in items)


def test_scale_up_from_nothing_creates_the_lowest_indexes():
    assert plan([], 3, 1, 60, NOW).create == [0, 1, 2]


def test_scale_up_fills_holes_left_by_deleted_pods():
    assert plan([idle(0), idle(2)], 3, 1, 60, NOW).create == [1]


def test_scale_down_drains_the_idle_worker_not_the_busy_one():
    result = plan([busy(0), idle(1), busy(2)], 2, 1, 60, NOW)
    assert names(result.drain) == ["w-1"] and result.delete == []


def test_scale_down_removes_a_pod_that_is_not_ready_at_once():
    result = plan([idle(0), pending(1), idle(2)], 2, 1, 60, NOW)
    assert names(result.delete) == ["w-1"] and result.drain == []


def test_scale_down_with_only_busy_workers_drains_instead_of_deleting():
    result = plan([busy(0), busy(1)], 1, 1, 60, NOW)
    assert names(result.drain) == ["w-1"] and result.delete == []


def test_a_drained_worker_is_deleted_once_idle():
    result = plan([idle(0), idle(1, draining_since=NOW)], 1, 1, 60, NOW)
    assert names(result.delete) == ["w-1"]


def test_a_drained_busy_worker_is_kept_until_the_drain_timeout():
    kept = plan([idle(0), busy(1, draining_since=NOW - timedelta(seconds=59))], 1, 1, 60, NOW)
    assert kept.delete == []
    expired = plan([idle(0), busy(1, draining_since=NOW - timedelta(seconds=60))], 1, 1, 60, NOW)
    assert names(expired.delete) == ["w-1"]


def test_a_worker_whose_health_is_unknown_counts_as_busy():
    unknown = WorkerPod(name="w-1", index=1, ready=True, worker_status=None, draining_since=NOW)
    assert plan([idle(0), unknown], 1, 1, 60, NOW).delete == []


def test_scaling_back_up_brings_a_drained_worker_back_instead_of_creating_one():
    result = plan([idle(0), busy(1, draining_since=NOW)], 2, 1, 60, NOW)
    assert names(result.undrain) == ["w-1"] and result.create == [] and result.delete == []


def test_a_failed_pod_is_deleted_and_its_slot_refilled_later():
    result = plan([idle(0), WorkerPod(name="w-1", index=1, failed=True)], 2, 1, 60, NOW)
    assert names(result.delete) == ["w-1"]


def test_a_terminating_pod_blocks_its_index_but_does_not_count():
    result = plan([idle(0), WorkerPod(name="w-1", index=1, terminating=True)], 2, 1, 60, NOW)
    assert result.create == [2]


def test_rolling_update_respects_max_unavailable_and_takes_idle_first():
    pods = [busy(0, outdated=True), idle(1, outdated=True), idle(2, outdated=True)]
    result = plan(pods, 3, 1, 60, NOW)
    assert names(result.drain) == ["w-2"]


def test_rolling_update_waits_while_a_replacement_is_not_ready():
    pods = [busy(0, outdated=True), idle(1, outdated=True), pending(2)]
    assert plan(pods, 3, 1, 60, NOW).drain == []


def test_rolling_update_drains_busy_workers_last():
    pods = [busy(0, outdated=True), idle(1), idle(2)]
    assert names(plan(pods, 3, 1, 60, NOW).drain) == ["w-0"]


def test_a_worker_drained_for_a_rolling_update_keeps_its_slot_until_gone():
    pods = [idle(0), busy(1, outdated=True, draining_since=NOW)]
    assert plan(pods, 2, 1, 60, NOW).empty


def test_outdated_pods_that_are_not_ready_are_replaced_without_waiting():
    pods = [pending(0, outdated=True), pending(1, outdated=True)]
    assert names(plan(pods, 2, 1, 60, NOW).delete) == ["w-0", "w-1"]


def test_a_settled_set_needs_nothing():
    assert plan([idle(0), busy(1)], 2, 1, 60, NOW).empty
