"""Status derived from an observation: conditions a person can act on, written only on change."""

from __future__ import annotations

from omnikube_operator.model_cache import JobState
from omnikube_operator.reconcile import contains
from omnikube_operator.scaling import WorkerPod
from omnikube_operator.status import Observation, PodTrouble, compute, pod_trouble
from omnikube_operator.validation import Problem

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def conditions(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}


def test_unschedulable_workers_are_named_with_the_schedulers_reason():
    obs = Observation(generation=1, desired=2, workers=[WorkerPod("x-worker-0", 0), WorkerPod("x-worker-1", 1)],
                      trouble=PodTrouble(unschedulable={"x-worker-0": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                                                        "x-worker-1": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}))
    ready = conditions(compute(obs, {}, NOW))["Ready"]
    assert ready["reason"] == "WorkersUnschedulable"
    assert ready["message"] == ("0/2 workers ready; 2 worker pod(s) unschedulable: x-worker-0, x-worker-1: "
                                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")


def test_all_workers_ready_and_no_gateway_replicas_is_ready():
    obs = Observation(generation=3, desired=1, gateway_replicas=0, workers=[WorkerPod("x-worker-0", 0, ready=True, worker_status="idle")])
    status = compute(obs, {}, NOW)
    assert conditions(status)["Ready"]["status"] == "True"
    assert status["phase"] == "Ready" and status["ready"] == "1/1" and status["observedGeneration"] == 3


def test_a_rejected_spec_is_degraded_and_not_progressing():
    obs = Observation(generation=2, desired=9, problems=[Problem("ReplicasAboveCap", "too many")])
    status = compute(obs, {}, NOW)
    assert conditions(status)["Degraded"]["reason"] == "ReplicasAboveCap"
    assert conditions(status)["Progressing"]["status"] == "False"
    assert status["phase"] == "Degraded"


def test_a_failed_download_is_degraded_with_the_jobs_reason():
    obs = Observation(generation=1, desired=1, download=JobState(False, True, "download Job j failed: BackoffLimitExceeded"))
    degraded = conditions(compute(obs, {}, NOW))["Degraded"]
    assert degraded["reason"] == "ModelDownloadFailed" and "BackoffLimitExceeded" in degraded["message"]


def test_an_image_that_cannot_be_pulled_is_degraded():
    # The container's earlier exit (an older image) is not why it cannot run now.
    pod = {"metadata": {"name": "x-worker-0"}, "status": {"containerStatuses": [
        {"image": "omnikube/worker:nope", "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}},
         "lastState": {"terminated": {"exitCode": 0, "message": "an older run"}}}]}}
    obs = Observation(generation=1, desired=1, workers=[WorkerPod("x-worker-0", 0)], trouble=pod_trouble([pod]))
    degraded = conditions(compute(obs, {}, NOW))["Degraded"]
    assert degraded["reason"] == "WorkerImageUnavailable" and "image not present" in degraded["message"]


def test_a_crash_looping_worker_is_degraded_with_the_reason_its_load_failed():
    pod = {"metadata": {"name": "x-worker-0"}, "status": {"containerStatuses": [{
        "image": "omnikube/worker:1",
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container=worker"}},
        "lastState": {"terminated": {"exitCode": 3, "reason": "Error",
                                     "message": "model load failed: FileNotFoundError: model.path '/models' does not exist"}}}]}}
    obs = Observation(generation=1, desired=1, workers=[WorkerPod("x-worker-0", 0)], trouble=pod_trouble([pod]))
    degraded = conditions(compute(obs, {}, NOW))["Degraded"]
    assert degraded["reason"] == "WorkerCrashLooping"
    assert degraded["message"] == ("1 worker pod(s) cannot run: x-worker-0: CrashLoopBackOff: exit code 3: "
                                   "model load failed: FileNotFoundError: model.path '/models' does not exist")


def test_an_unchanged_world_gives_an_identical_status():
    obs = Observation(generation=1, desired=1, workers=[WorkerPod("x-worker-0", 0)])
    first = compute(obs, {}, NOW)
    assert compute(obs, first, LATER) == first


def test_transition_time_moves_only_when_the_status_flips():
    pending = compute(Observation(generation=1, desired=1, gateway_replicas=0, workers=[WorkerPod("x-worker-0", 0)]), {}, NOW)
    ready = compute(Observation(generation=1, desired=1, gateway_replicas=0,
                                workers=[WorkerPod("x-worker-0", 0, ready=True)]), pending, LATER)
    assert conditions(ready)["Ready"]["lastTransitionTime"] == LATER
    assert conditions(ready)["Degraded"]["lastTransitionTime"] == NOW


def test_drift_check_ignores_server_added_fields_but_sees_edits():
    want = {"spec": {"type": "ClusterIP", "ports": [{"port": 8006}], "selector": {}}}
    assert contains({"spec": {"type": "ClusterIP", "clusterIP": "10.0.0.7", "ports": [{"port": 8006, "protocol": "TCP"}]}}, want)
    assert not contains({"spec": {"type": "NodePort", "ports": [{"port": 8006}]}}, want)
    assert not contains({"spec": {"type": "ClusterIP", "ports": [{"port": 8006}, {"port": 9}]}}, want)
