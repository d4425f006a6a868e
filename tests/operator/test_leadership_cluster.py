"""Leader election (kopf peering) with two real operator processes on one namespace: the second
waits, paused, while the first leads, and takes over when the first one stops."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fixtures.omnideployment import eventually
from tests.fixtures.processes import free_port
from tests.fixtures.reliability import record
from tests.operator.test_operator_cluster import spec

pytestmark = pytest.mark.cluster


def reconciles(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("omnikube_operator_reconciles_total{"))


def start_with_metrics(start_operator) -> tuple[object, int]:
    port = free_port()
    return start_operator("--metrics-port", str(port), "--bind", "127.0.0.1"), port


def delete_the_worker_and_wait_for_its_replacement(omni, timeout: float) -> None:
    """Which index the replacement gets is not the point here (an operator whose pod index still
    holds the deleted pod takes the next one): one live worker, not the deleted one."""
    old = next(p for p in omni.pods("led") if not p["metadata"].get("deletionTimestamp"))
    omni.api.delete("v1", "Pod", omni.namespace, old["metadata"]["name"])
    eventually(lambda: [p["metadata"]["uid"] for p in omni.pods("led") if not p["metadata"].get("deletionTimestamp")]
               not in ([], [old["metadata"]["uid"]]) and len(omni.live_worker_names("led")) == 1, timeout,
               "one new worker in place of the deleted one")


def test_a_second_operator_waits_while_the_first_leads_and_takes_over_when_it_stops(omni, start_operator):
    leader, leader_port = start_with_metrics(start_operator)
    omni.create("led", spec(replicas=1))
    omni.wait_workers("led", ["led-worker-0"])
    eventually(lambda: reconciles(leader_port) >= 1, 30, "the leader to reconcile")

    follower, follower_port = start_with_metrics(start_operator)
    # A newcomer starts paused and stays so while a live peer of higher priority (older) exists.
    eventually(lambda: "Initial authentication has finished" in follower.log() and reconciles(follower_port) == 0, 30,
               "the second operator to be up")
    # The leader alone repairs what breaks meanwhile; the follower's counter stays at zero.
    delete_the_worker_and_wait_for_its_replacement(omni, 30)
    before = reconciles(leader_port)
    eventually(lambda: reconciles(leader_port) >= before + 3, 30, "the leader to keep reconciling")
    assert reconciles(follower_port) == 0, "the paused operator reconciled while the leader ran"

    stopped_at = time.monotonic()
    leader.stop()
    eventually(lambda: reconciles(follower_port) >= 1, 60, "the follower to take over")
    handover_s = time.monotonic() - stopped_at
    record({"test": "operator leader stopped", "handover_s": round(handover_s, 2)})
    delete_the_worker_and_wait_for_its_replacement(omni, 30)
