"""Edits never cost a healthy worker: a spec whose pods cannot work is tried out (image grammar,
server-side dry run) and refused before any worker goes, with a Degraded condition saying what to
fix; a valid edit after it rolls as usual. Storage switched on and off on a live OmniDeployment
converges."""

from __future__ import annotations

import pytest

from tests.fixtures.omnideployment import eventually
from tests.operator.test_operator_cluster import ready_workers, spec

pytestmark = pytest.mark.cluster


def live_uids(omni, name: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in omni.pods(name) if not p["metadata"].get("deletionTimestamp")}


@pytest.mark.parametrize("bad, reason, words", [
    ({"workers": {"image": "Not A Valid Image!!"}}, "InvalidImage", "spec.workers.image 'Not A Valid Image!!' is not a valid image reference"),
    ({"workers": {"resources": {"limits": {"memory": "lots"}}}}, "WorkerPodRejected", "quantities must match the regular expression"),
    ({"gateway": {"image": "gateway image"}}, "InvalidImage", "spec.gateway.image"),
], ids=["image-string", "memory-lots", "gateway-image"])
def test_a_spec_no_pod_can_be_made_from_keeps_the_idle_healthy_worker(omni, start_operator, start_worker, bad, reason, words):
    start_operator()
    omni.create("edit", spec(replicas=1))
    ready_workers(omni, start_worker, "edit", 1)
    omni.wait_condition("edit", "Ready", "True")
    before = live_uids(omni, "edit")
    omni.patch_spec("edit", bad)
    cond = omni.wait_condition("edit", "Degraded", "True", reason)
    assert words in cond["message"], cond["message"]
    assert live_uids(omni, "edit") == before  # the healthy worker is still the same pod
    assert any(e["reason"] == "SpecRejected" and words in e["message"] for e in omni.events("edit"))


def test_after_a_refused_edit_a_valid_one_rolls_the_worker(omni, start_operator, start_worker):
    start_operator()
    omni.create("fix", spec(replicas=1))
    ready_workers(omni, start_worker, "fix", 1)
    before = live_uids(omni, "fix")
    omni.patch_spec("fix", {"workers": {"image": "Not A Valid Image!!"}})
    omni.wait_condition("fix", "Degraded", "True", "InvalidImage")
    omni.patch_spec("fix", {"workers": {"image": "omnikube/worker:next"}})
    omni.wait_condition("fix", "Degraded", "False")
    eventually(lambda: (live_uids(omni, "fix").get("fix-worker-0") not in (None, before["fix-worker-0"])), 30,
               "the worker to be rolled to the valid image")
    assert omni.child("v1", "Pod", "fix-worker-0")["spec"]["containers"][0]["image"] == "omnikube/worker:next"


def _data_volume(omni, name: str) -> dict:
    deployment = omni.child("apps/v1", "Deployment", f"{name}-gateway")
    mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    (volume_name,) = [m["name"] for m in mounts if m["mountPath"] == "/var/lib/omnikube/data"]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == volume_name]
    return volume


def test_storage_switched_on_and_off_on_a_live_omnideployment_converges(omni, start_operator):
    start_operator()
    omni.create("store", spec(replicas=1, gateway={"replicas": 1}))
    omni.wait_workers("store", ["store-worker-0"])
    eventually(lambda: "emptyDir" in _data_volume(omni, "store"), 30, "the gateway on an emptyDir")
    worker_uid = live_uids(omni, "store")["store-worker-0"]

    omni.patch_spec("store", {"storage": {"enabled": True}})
    eventually(lambda: _data_volume(omni, "store").get("persistentVolumeClaim", {}).get("claimName") == "store-data", 30,
               "the gateway on the data PVC")
    assert "emptyDir" not in _data_volume(omni, "store")
    eventually(lambda: any(v.get("persistentVolumeClaim", {}).get("claimName") == "store-data"
                           for p in omni.pods("store") if p["metadata"]["uid"] != worker_uid for v in p["spec"]["volumes"]),
               30, "the worker rolled onto the data PVC")
    assert omni.condition("store", "Degraded").get("reason") != "ReconcileError"

    omni.patch_spec("store", {"storage": {"enabled": False}})
    eventually(lambda: "emptyDir" in _data_volume(omni, "store"), 30, "the gateway back on an emptyDir")
    assert "persistentVolumeClaim" not in _data_volume(omni, "store")
    omni.wait_condition("store", "Degraded", "False")
