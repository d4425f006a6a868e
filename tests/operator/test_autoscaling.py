"""The autoscaler's recommendations and stabilisation windows (pure: no cluster)."""

from __future__ import annotations

from omnikube.spec import AutoscalingSpec
from omnikube_operator.autoscaling import CLAMPED, HOLD, SCALE_DOWN, SCALE_UP, Autoscaler
from omnikube_operator.health import Load, parse_load
from omnikube_operator.scaling import WorkerPod

SPEC = AutoscalingSpec(enabled=True, min_replicas=1, max_replicas=5, target_queue_wait_seconds=10,
                       scale_up_stabilization_seconds=0, scale_down_stabilization_seconds=60)


def busy(index: int) -> WorkerPod:
    return WorkerPod(name=f"w-{index}", index=index, ready=True, worker_status="duplex_active")


def idle(index: int) -> WorkerPod:
    return WorkerPod(name=f"w-{index}", index=index, ready=True, worker_status="idle")


def starting(index: int) -> WorkerPod:
    return WorkerPod(name=f"w-{index}", index=index)


def test_a_queue_waiting_longer_than_the_target_gets_a_worker_per_waiting_request_at_once():
    decision = Autoscaler().decide("d", SPEC, 1, [busy(0)], Load(3, 90.0, 1), now=0)
    assert (decision.kind, decision.replicas) == (SCALE_UP, 4)
    assert "3 queued" in decision.reason and "target 10s" in decision.reason


def test_workers_already_starting_cover_the_queue_so_no_more_are_asked_for():
    pods = [busy(0), starting(1), starting(2), starting(3)]
    decision = Autoscaler().decide("d", SPEC, 4, pods, Load(3, 90.0, 1), now=0)
    assert (decision.kind, decision.replicas) == (HOLD, 4)


def test_a_queue_within_the_target_holds():
    assert Autoscaler().decide("d", SPEC, 2, [busy(0), busy(1)], Load(1, 5.0, 1), now=0).kind == HOLD


def test_scale_up_never_passes_max_replicas():
    assert Autoscaler().decide("d", SPEC, 1, [busy(0)], Load(20, 900.0, 1), now=0).replicas == 5


def test_scale_down_waits_for_the_window_then_keeps_the_busy_workers():
    scaler = Autoscaler()
    pods = [busy(0), idle(1), idle(2)]
    assert scaler.decide("d", SPEC, 3, pods, Load(0, 0.0, 1), now=0).kind == HOLD
    assert scaler.decide("d", SPEC, 3, pods, Load(0, 0.0, 1), now=59).kind == HOLD
    decision = scaler.decide("d", SPEC, 3, pods, Load(0, 0.0, 1), now=61)
    assert (decision.kind, decision.replicas) == (SCALE_DOWN, 1)


def test_flapping_load_within_the_window_does_not_scale_down():
    scaler = Autoscaler()
    scaler.decide("d", SPEC, 1, [busy(0)], Load(2, 90.0, 1), now=0)          # burst: 3 wanted
    kinds = [scaler.decide("d", SPEC, 3, [busy(0), idle(1), idle(2)], Load(q, 90.0 * q, 1), now=t).kind
             for t, q in ((10, 0), (20, 2), (30, 0), (40, 0), (50, 1), (60, 0))]
    assert SCALE_DOWN not in kinds


def test_no_gateway_answer_holds():
    assert Autoscaler().decide("d", SPEC, 2, [idle(0), idle(1)], None, now=0).kind == HOLD


def test_replicas_set_outside_the_bounds_are_clamped_at_once():
    decision = Autoscaler().decide("d", SPEC, 9, [], Load(0, 0.0, 1), now=0)
    assert (decision.kind, decision.replicas) == (CLAMPED, 5)
    assert "outside autoscaling bounds [1, 5]" in decision.reason


def test_the_gateways_queue_and_longest_eta_are_read_from_its_metrics():
    text = ("# TYPE omnikube_gateway_queue_length gauge\nomnikube_gateway_queue_length 3.0\n"
            "# TYPE omnikube_gateway_eta_seconds gauge\n"
            'omnikube_gateway_eta_seconds{task_type="chat"} 12.5\n'
            'omnikube_gateway_eta_seconds{task_type="omni_duplex"} 240.0\n')
    assert parse_load(text) == (3, 240.0)
    assert parse_load("# TYPE other gauge\nother 1\n") is None
