"""The operator against the real local API server (control plane only, no node).

Pods never run here: a test makes a worker pod "Running and Ready" by patching its status, with
podIP 127.0.0.1 and its worker-port annotation pointing at a simulated worker process on loopback,
so the operator's /health probe reaches a real worker that is idle or in a session. Every pod and
the gateway carry a node selector no node matches, so a node started by another test session
never runs them. The gateway runs zero replicas unless a test needs it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pytest
from websockets.sync.client import connect

from omnikube import labels
from omnikube_operator.reconcile import Pods, Reconciler
from tests.fixtures.omnideployment import eventually

pytestmark = pytest.mark.cluster

NOWHERE = {"omnikube.test/no-such-node": "true"}


def spec(replicas: int = 2, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "backend": {"type": "simulated"},
        "workers": {"replicas": replicas, "image": "omnikube/worker:dev", "nodeSelector": NOWHERE},
        "gateway": {"replicas": 0, "image": "omnikube/gateway:dev", "nodeSelector": NOWHERE},
        "modelCache": {"source": "none"},
        "storage": {"enabled": False},
    }
    for key, value in extra.items():
        base[key] = {**base.get(key, {}), **value}
    return base


def worker(name: str, index: int) -> str:
    return f"{name}-worker-{index}"


@contextlib.contextmanager
def session(worker_proc) -> Iterator[None]:
    """Hold a half-duplex session open on a simulated worker: it reports busy until we leave."""
    with connect(f"{worker_proc.ws_url}/ws/half_duplex?session_id=test", open_timeout=10):
        worker_proc.wait_status("busy_half_duplex")
        yield


def ready_workers(omni, start_worker, name: str, count: int) -> dict[str, Any]:
    """Wait for `count` worker pods and make each Ready, backed by its own simulated worker."""
    procs = {worker(name, i): start_worker(zero_delay=True, wait=False) for i in range(count)}  # start in parallel
    omni.wait_workers(name, sorted(procs))
    for pod_name, proc in procs.items():
        proc.wait_status("idle", deadline_s=30)
        omni.fake_ready(pod_name, proc.port)
    return procs


def test_an_omnideployment_gets_every_child(omni, start_operator):
    start_operator()
    omni.create("full", spec(replicas=2, storage={"enabled": True}, gateway={"replicas": 1}))
    omni.wait_workers("full", ["full-worker-0", "full-worker-1"])
    for api_version, kind, name in [
        ("v1", "ConfigMap", "full-config"), ("v1", "ServiceAccount", "full-gateway"),
        ("rbac.authorization.k8s.io/v1", "Role", "full-gateway"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "full-gateway"),
        ("v1", "Service", "full-workers"), ("v1", "Service", "full-gateway"),
        ("apps/v1", "Deployment", "full-gateway"), ("v1", "PersistentVolumeClaim", "full-data"),
    ]:
        child = eventually(lambda: omni.child(api_version, kind, name), 30, f"{kind} {name}")
        assert child["metadata"]["ownerReferences"][0]["name"] == "full"
    config = omni.child("v1", "ConfigMap", "full-config")["data"]["config.json"]
    assert '"worker_base_port": 22400' in config
    assert omni.child("v1", "Service", "full-workers")["spec"]["clusterIP"] == "None"
    pdbs = omni.api.list("policy/v1beta1", "PodDisruptionBudget", omni.namespace)
    assert sorted(p["metadata"]["name"] for p in pdbs) == ["full-gateway", "full-workers"]
    pod = omni.pods("full")[0]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")


def test_status_explains_unschedulable_workers_and_notes_missing_prometheus(omni, start_operator):
    start_operator()
    omni.create("pending", spec(replicas=1))
    cond = omni.wait_condition("pending", "Ready", "False", "WorkersUnschedulable")
    assert "pending-worker-0" in cond["message"] and "0/1 workers ready" in cond["message"]
    status = omni.status("pending")
    assert status["desiredWorkers"] == 1 and status["ready"] == "0/1"
    assert any("Prometheus" in note for note in status["notes"])
    assert status["gatewayEndpoint"] == f"http://pending-gateway.{omni.namespace}.svc:8006"


def _monitoring_crd(kind: str, plural: str) -> dict[str, Any]:
    """The Prometheus Operator's CRD for `kind`, schema left open: the operator's objects are what is
    under test, and the real CRDs cannot be fetched here."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


@pytest.fixture
def prometheus_operator_crds(k8s_cluster) -> Iterator[None]:
    """ServiceMonitor and PodMonitor served while one test runs; removed after it, so that the other
    tests see a cluster without the Prometheus Operator, as the local one is."""
    crds = [_monitoring_crd("ServiceMonitor", "servicemonitors"), _monitoring_crd("PodMonitor", "podmonitors")]
    k8s_cluster.apply_manifest(crds)
    for crd in crds:
        k8s_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", crd["metadata"]["name"])
    yield
    k8s_cluster.kubectl("delete", "--wait=true", "--timeout=60s", "crd", *(crd["metadata"]["name"] for crd in crds))


def test_with_the_prometheus_operator_the_gateway_and_workers_get_monitors_until_switched_off(
        omni, start_operator, prometheus_operator_crds):
    start_operator()
    omni.create("mon", spec(replicas=1, monitoring={"labels": {"release": "prometheus"}, "interval": "30s"}))
    service_monitor = eventually(lambda: omni.child("monitoring.coreos.com/v1", "ServiceMonitor", "mon-gateway"), 30,
                                 "the gateway's ServiceMonitor")
    pod_monitor = eventually(lambda: omni.child("monitoring.coreos.com/v1", "PodMonitor", "mon-workers"), 30,
                             "the workers' PodMonitor")
    gateway_service = omni.child("v1", "Service", "mon-gateway")
    assert service_monitor["metadata"]["labels"]["release"] == "prometheus"
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= gateway_service["metadata"]["labels"].items()
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert endpoint["interval"] == "30s" and endpoint["port"] in {p.get("name") for p in gateway_service["spec"]["ports"]}
    eventually(lambda: omni.pods("mon"), 30, "the worker pod")
    pod = omni.pods("mon")[0]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (pod_endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["port"] in {p.get("name") for p in pod["spec"]["containers"][0]["ports"]}
    assert not any("Prometheus" in note for note in omni.status("mon").get("notes") or [])

    omni.patch_spec("mon", {"monitoring": {"podMonitor": False}})
    eventually(lambda: omni.child("monitoring.coreos.com/v1", "PodMonitor", "mon-workers") is None, 30,
               "the PodMonitor to be removed")
    assert omni.child("monitoring.coreos.com/v1", "ServiceMonitor", "mon-gateway") is not None


def test_status_reaches_ready_and_kubectl_wait_sees_it(omni, start_operator, start_worker):
    start_operator()
    omni.create("ready", spec(replicas=2))
    ready_workers(omni, start_worker, "ready", 2)
    omni.cluster.kubectl("wait", "-n", omni.namespace, "--for=condition=Ready", "omni/ready", "--timeout=60s", timeout=70)
    status = omni.status("ready")
    assert status["readyWorkers"] == 2 and status["phase"] == "Ready"
    eventually(lambda: {w.get("workerStatus") for w in omni.status("ready")["workers"]} == {"idle"}, 30,
               "both workers reported idle in status")
    assert status["observedGeneration"] == omni.get("ready")["metadata"]["generation"]


def test_scale_down_removes_idle_workers_and_keeps_the_busy_one(omni, start_operator, start_worker):
    start_operator()
    omni.create("down", spec(replicas=3))
    procs = ready_workers(omni, start_worker, "down", 3)
    with session(procs["down-worker-2"]):
        omni.cluster.kubectl("scale", "-n", omni.namespace, "omni/down", "--replicas=1")
        omni.wait_workers("down", ["down-worker-2"])
        assert procs["down-worker-2"].health()["worker_status"] == "busy_half_duplex"


def test_a_busy_worker_is_drained_and_deleted_only_when_its_session_ends(omni, start_operator, start_worker):
    start_operator()
    omni.create("drain", spec(replicas=1))
    procs = ready_workers(omni, start_worker, "drain", 1)
    with session(procs["drain-worker-0"]):
        omni.cluster.kubectl("scale", "-n", omni.namespace, "omni/drain", "--replicas=0")
        eventually(lambda: (omni.pods("drain")[0]["metadata"].get("annotations") or {}).get(labels.DRAIN) == "true",
                   30, "the busy worker to be marked for draining")
        omni.wait_condition("drain", "Progressing", "True", "Draining")
        assert omni.live_worker_names("drain") == ["drain-worker-0"]
    omni.wait_workers("drain", [])


def test_a_drained_worker_is_deleted_when_the_drain_timeout_passes(omni, start_operator, start_worker):
    start_operator()
    omni.create("timeout", spec(replicas=1, workers={"drainTimeoutSeconds": 3}))
    procs = ready_workers(omni, start_worker, "timeout", 1)
    with session(procs["timeout-worker-0"]):
        omni.cluster.kubectl("scale", "-n", omni.namespace, "omni/timeout", "--replicas=0")
        omni.wait_workers("timeout", [], timeout=60)


def test_scale_up_adds_workers_and_brings_a_draining_one_back(omni, start_operator, start_worker):
    start_operator()
    omni.create("up", spec(replicas=1))
    procs = ready_workers(omni, start_worker, "up", 1)
    with session(procs["up-worker-0"]):
        omni.patch_spec("up", {"workers": {"replicas": 0}})
        eventually(lambda: (omni.pods("up")[0]["metadata"].get("annotations") or {}).get(labels.DRAIN) == "true",
                   30, "the worker to be draining")
        omni.patch_spec("up", {"workers": {"replicas": 3}})
        omni.wait_workers("up", ["up-worker-0", "up-worker-1", "up-worker-2"])
        eventually(lambda: labels.DRAIN not in (omni.child("v1", "Pod", "up-worker-0")["metadata"].get("annotations") or {}),
                   30, "the draining worker to take work again")


def test_a_pass_that_still_sees_a_worker_as_not_ready_does_not_cut_it_once_it_is_ready(omni):
    # kopf's index lags the API by a moment, and scale-down deletes a not-ready pod at once: the
    # deletion must hit only the pod as that pass saw it. Passes run in-process, with the views given.
    reconciler = Reconciler(omni.api, probe=lambda pods: {})
    omni.create("lag", spec(replicas=1))
    reconciler.reconcile(omni.get("lag"), Pods())
    seen_before_ready = eventually(lambda: omni.child("v1", "Pod", "lag-worker-0"), 30, "the worker pod")
    omni.fake_ready("lag-worker-0")
    omni.patch_spec("lag", {"workers": {"replicas": 0}})

    reconciler.reconcile(omni.get("lag"), Pods(workers=[seen_before_ready]))
    pod = omni.child("v1", "Pod", "lag-worker-0")
    assert pod["metadata"]["uid"] == seen_before_ready["metadata"]["uid"]
    assert not pod["metadata"].get("deletionTimestamp")

    reconciler.reconcile(omni.get("lag"), Pods(workers=[pod]))
    assert omni.child("v1", "Pod", "lag-worker-0")["metadata"]["annotations"].get(labels.DRAIN) == "true"


def test_a_spec_change_rolls_workers_one_at_a_time_busy_last(omni, start_operator, start_worker):
    start_operator()
    omni.create("roll", spec(replicas=2))
    procs = ready_workers(omni, start_worker, "roll", 2)
    old = {p["metadata"]["name"]: p["metadata"]["labels"][labels.TEMPLATE_HASH] for p in omni.pods("roll")}
    with session(procs["roll-worker-0"]):
        omni.patch_spec("roll", {"workers": {"image": "omnikube/worker:next"}})

        def replaced(name: str) -> bool:
            pod = omni.child("v1", "Pod", name)
            return bool(pod) and pod["metadata"]["labels"][labels.TEMPLATE_HASH] != old[name]

        eventually(lambda: replaced("roll-worker-1"), 30, "the idle worker to be replaced first")
        assert omni.child("v1", "Pod", "roll-worker-0")["metadata"]["labels"][labels.TEMPLATE_HASH] == old["roll-worker-0"]
        omni.wait_condition("roll", "Progressing", "True", "RollingUpdate")
        # maxUnavailable 1: the busy old worker waits until its replacement's sibling is ready.
        omni.fake_ready("roll-worker-1", procs["roll-worker-1"].port)
        eventually(lambda: (omni.child("v1", "Pod", "roll-worker-0")["metadata"].get("annotations") or {})
                   .get(labels.DRAIN) == "true", 30, "the busy worker to be drained")
        assert omni.child("v1", "Pod", "roll-worker-0")["metadata"]["labels"][labels.TEMPLATE_HASH] == old["roll-worker-0"]
    eventually(lambda: replaced("roll-worker-0"), 30, "the busy worker to be replaced after its session")
    image = omni.child("v1", "Pod", "roll-worker-0")["spec"]["containers"][0]["image"]
    assert image == "omnikube/worker:next"


def test_a_deleted_worker_pod_is_replaced(omni, start_operator):
    start_operator()
    omni.create("heal", spec(replicas=2))
    omni.wait_workers("heal", ["heal-worker-0", "heal-worker-1"])
    uid = omni.child("v1", "Pod", "heal-worker-0")["metadata"]["uid"]
    omni.api.delete("v1", "Pod", omni.namespace, "heal-worker-0")
    eventually(lambda: (omni.child("v1", "Pod", "heal-worker-0") or {}).get("metadata", {}).get("uid") not in (None, uid),
               30, "a new heal-worker-0")
    assert omni.live_worker_names("heal") == ["heal-worker-0", "heal-worker-1"]


def test_children_edited_by_hand_are_put_back(omni, start_operator):
    start_operator()
    omni.create("edit", spec(replicas=1))
    original = eventually(lambda: omni.child("v1", "ConfigMap", "edit-config"), 30, "the ConfigMap")["data"]["config.json"]
    eventually(lambda: omni.child("v1", "Service", "edit-gateway"), 30, "the gateway Service")
    omni.api.patch("v1", "ConfigMap", omni.namespace, "edit-config", {"data": {"config.json": "{}"}})
    omni.api.patch("v1", "Service", omni.namespace, "edit-gateway", {"spec": {"type": "NodePort"}})
    omni.api.delete("rbac.authorization.k8s.io/v1", "Role", omni.namespace, "edit-gateway")
    eventually(lambda: omni.child("v1", "ConfigMap", "edit-config")["data"]["config.json"] == original, 30,
               "config.json to be restored")
    eventually(lambda: omni.child("v1", "Service", "edit-gateway")["spec"]["type"] == "ClusterIP", 30,
               "the gateway Service type to be restored")
    eventually(lambda: omni.child("rbac.authorization.k8s.io/v1", "Role", "edit-gateway"), 30, "the Role to be recreated")
    assert any(e["reason"] == "UpdatedConfigMap" for e in omni.events("edit"))


def test_an_operator_restart_mid_reconcile_makes_no_duplicates(omni, start_operator):
    operator = start_operator()
    omni.create("restart", spec(replicas=4))
    eventually(lambda: omni.live_worker_names("restart"), 30, "the first worker pod")
    operator.restart()  # SIGKILL mid-way, then start again
    omni.wait_workers("restart", [f"restart-worker-{i}" for i in range(4)])
    operator.restart()
    omni.wait_condition("restart", "Progressing", "True", "WorkersStarting", timeout=30)
    assert omni.status("restart")["replicas"] == 4
    assert len(omni.pods("restart")) == 4
    for api_version, kind in [("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"), ("v1", "ServiceAccount")]:
        names = [o["metadata"]["name"] for o in omni.api.list(api_version, kind, omni.namespace, "omnikube.dev/deployment=restart")]
        assert len(names) == len(set(names)) and names, f"{kind}: {names}"
    assert len(omni.api.list("v1", "Service", omni.namespace, "omnikube.dev/deployment=restart")) == 2


def test_replicas_above_the_cap_degrade_and_touch_nothing(omni, start_operator):
    start_operator()
    omni.create("cap", spec(replicas=2, workers={"maxReplicas": 3}))
    omni.wait_workers("cap", ["cap-worker-0", "cap-worker-1"])
    uids = {p["metadata"]["uid"] for p in omni.pods("cap")}
    omni.patch_spec("cap", {"workers": {"replicas": 5, "image": "omnikube/worker:other"}})
    cond = omni.wait_condition("cap", "Degraded", "True", "ReplicasAboveCap")
    assert "maxReplicas=3" in cond["message"]
    assert omni.status("cap")["phase"] == "Degraded"
    assert {p["metadata"]["uid"] for p in omni.pods("cap")} == uids
    assert any(e["reason"] == "SpecRejected" and e["type"] == "Warning" for e in omni.events("cap"))
    omni.patch_spec("cap", {"workers": {"replicas": 3}})
    omni.wait_condition("cap", "Degraded", "False")
    omni.wait_workers("cap", ["cap-worker-0", "cap-worker-1", "cap-worker-2"])


@pytest.mark.parametrize("bad, reason", [
    ({"auth": {"apiKeySecret": {"name": "missing", "key": "k"}}}, "SecretNotFound"),
    ({"storage": {"enabled": True, "storageClassName": "no-such-class"}}, "StorageClassNotFound"),
], ids=["missing-secret", "unknown-storage-class"])
def test_a_spec_the_cluster_cannot_honour_degrades_with_the_reason(omni, start_operator, bad, reason):
    start_operator()
    omni.create("bad", spec(replicas=1))
    omni.wait_workers("bad", ["bad-worker-0"])
    config = omni.child("v1", "ConfigMap", "bad-config")["data"]
    omni.patch_spec("bad", bad)
    omni.wait_condition("bad", "Degraded", "True", reason)
    assert omni.child("v1", "ConfigMap", "bad-config")["data"] == config
    assert omni.live_worker_names("bad") == ["bad-worker-0"]


def test_workers_wait_for_the_model_download(omni, start_operator):
    start_operator()
    omni.create("dl", spec(replicas=1, backend={"type": "minicpmo"},
                           modelCache={"source": "download", "download": {"repoId": "openbmb/MiniCPM-o-4_5"}}))
    job = eventually(lambda: omni.api.list("batch/v1", "Job", omni.namespace, "omnikube.dev/deployment=dl"), 30,
                     "the download Job")[0]
    assert "MiniCPM-o-4_5" in str(job["spec"]["template"]["spec"]["containers"][0]["env"])
    cond = omni.wait_condition("dl", "Progressing", "True", "DownloadingModel")
    assert job["metadata"]["name"] in cond["message"]
    assert omni.condition("dl", "Ready")["reason"] == "ModelNotDownloaded"
    assert omni.pods("dl") == []


def test_deleting_the_omnideployment_garbage_collects_every_child(omni, start_operator):
    start_operator()
    omni.create("gone", spec(replicas=2))
    omni.wait_workers("gone", ["gone-worker-0", "gone-worker-1"])
    eventually(lambda: omni.child("apps/v1", "Deployment", "gone-gateway"), 30, "the gateway Deployment")
    omni.api.delete(labels.API_VERSION, labels.KIND, omni.namespace, "gone")
    eventually(lambda: omni.get("gone") is None, 30, "the OmniDeployment to go (operator removes its finalizer)")
    selector = "omnikube.dev/deployment=gone"
    for api_version, kind in [("v1", "Pod"), ("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
                              ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role")]:
        eventually(lambda: not omni.api.list(api_version, kind, omni.namespace, selector), 60,
                   f"every {kind} to be garbage-collected")


def test_every_action_is_recorded_as_an_event(omni, start_operator):
    start_operator()
    omni.create("story", spec(replicas=1))
    omni.wait_workers("story", ["story-worker-0"])
    eventually(lambda: {"CreatedWorkerPod", "CreatedConfigMap", "CreatedDeployment"}
               <= {e["reason"] for e in omni.events("story")}, 30, "events for the created children")


def test_the_operator_serves_liveness_and_reconcile_metrics(omni, start_operator):
    import httpx

    from tests.fixtures.processes import free_port

    liveness, metrics_port = free_port(), free_port()
    start_operator("--liveness-port", str(liveness), "--metrics-port", str(metrics_port), "--bind", "127.0.0.1")
    omni.create("observed", spec(replicas=1))
    omni.wait_workers("observed", ["observed-worker-0"])

    def reconciled() -> bool:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
        line = next(l for l in text.splitlines() if l.startswith('omnikube_operator_reconciles_total{result="ok"}'))
        return float(line.split()[-1]) >= 1

    eventually(reconciled, 30, "the reconcile counter to count")
    eventually(lambda: httpx.get(f"http://127.0.0.1:{liveness}/healthz", timeout=2).status_code == 200, 30,
               "kopf's liveness endpoint")
