"""Discovery against the real API server of the local cluster.

No node is needed: worker pods get a nodeSelector nothing matches, so they never schedule, and the
test plays the kubelet by patching their `/status` (Ready condition, podIP 127.0.0.1) while the
port annotation points at a simulated worker process on loopback.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from websockets.sync.client import connect

from omnikube import labels
from tests.fixtures.cluster import eventually
from tests.fixtures.processes import launch_gateway, launch_worker, wait_until
from tests.fixtures.reliability import record

pytestmark = pytest.mark.cluster

DEPLOYMENT = "demo"
CHAT = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def ns(k8s_cluster):
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(k8s_cluster.kubeconfig)))
    name = f"t-gw-discovery-{uuid.uuid4().hex[:6]}"
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods need the namespace's default service account.
    eventually(lambda: api.read_namespaced_service_account("default", name), 30, f"service account default in {name}")
    yield api, name
    api.delete_namespace(name, grace_period_seconds=0)


@pytest.fixture(scope="module")
def stack(k8s_cluster, ns, tmp_path_factory):
    api, namespace = ns
    log_dir = tmp_path_factory.mktemp("discovery")
    worker = launch_worker(log_dir, zero_delay=True)
    gateway = launch_gateway(log_dir, None, args=["--deployment", DEPLOYMENT, "--namespace", namespace,
                                                  "--kubeconfig", str(k8s_cluster.kubeconfig), "--timeout", "2"])
    yield api, namespace, worker, gateway
    gateway.kill()
    worker.kill()


def make_pod(api, namespace: str, worker, *, index: int = 0, name: str | None = None) -> str:
    name = name or f"demo-worker-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {**labels.common_labels(DEPLOYMENT, labels.COMPONENT_WORKER), labels.WORKER_INDEX: str(index)},
                     "annotations": {labels.WORKER_PORT: str(worker.port)}},
        "spec": {"nodeSelector": {"omnikube.test/nowhere": "true"}, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "worker", "image": "omnikube/none:never", "imagePullPolicy": "Never"}]},
    }
    api.create_namespaced_pod(namespace, body)
    return name


def set_ready(api, namespace: str, name: str, ready: bool) -> None:
    status = {"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                         "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    api.patch_namespaced_pod_status(name, namespace, status)


def ready_pod(api, namespace: str, worker, gateway, **options) -> str:
    name = make_pod(api, namespace, worker, **options)
    set_ready(api, namespace, name, True)
    wait_until(lambda: routable(gateway, name), 30, f"{name} to be routable")
    return name


def workers(gateway) -> dict[str, dict]:
    return {w["worker_id"]: w for w in gateway.get("/workers").json()["workers"]}


def routable(gateway, name: str) -> bool:
    w = workers(gateway).get(name)
    return bool(w and w["ready"] and not w["draining"] and w["status"] == "idle")


def chat_status(gateway) -> int:
    return httpx.post(f"{gateway.url}/api/chat", json=CHAT, timeout=10).status_code


def remove(api, namespace: str, gateway, name: str) -> None:
    api.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    wait_until(lambda: name not in workers(gateway), 10, f"{name} to leave the registry")


def test_a_pod_becomes_routable_only_once_ready_with_an_ip(stack):
    api, namespace, worker, gateway = stack
    name = make_pod(api, namespace, worker)
    try:
        assert name not in workers(gateway)  # no IP yet: not a worker
        set_ready(api, namespace, name, True)
        wait_until(lambda: routable(gateway, name), 10, "the ready pod to be routable")
        assert workers(gateway)[name]["port"] == worker.port
        assert chat_status(gateway) == 200
    finally:
        remove(api, namespace, gateway, name)


def test_a_pod_that_turns_not_ready_stops_getting_work(stack):
    api, namespace, worker, gateway = stack
    name = ready_pod(api, namespace, worker, gateway)
    try:
        set_ready(api, namespace, name, False)
        wait_until(lambda: not workers(gateway)[name]["ready"], 10, "not ready seen")
        assert chat_status(gateway) == 503  # queued, then timed out: no work went to it
    finally:
        remove(api, namespace, gateway, name)


def test_a_deleted_pod_leaves_the_registry(stack):
    api, namespace, worker, gateway = stack
    name = ready_pod(api, namespace, worker, gateway)
    remove(api, namespace, gateway, name)
    assert chat_status(gateway) == 503


def test_a_relabelled_pod_is_dropped_and_a_relabelled_back_one_returns(stack):
    api, namespace, worker, gateway = stack
    name = ready_pod(api, namespace, worker, gateway)
    try:
        api.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {labels.COMPONENT: "something-else"}}})
        wait_until(lambda: name not in workers(gateway), 10, "the relabelled pod to leave")
        api.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {labels.COMPONENT: labels.COMPONENT_WORKER}}})
        wait_until(lambda: routable(gateway, name), 10, "the pod to come back")
    finally:
        remove(api, namespace, gateway, name)


def test_a_drained_worker_finishes_its_session_but_takes_no_new_one(stack):
    api, namespace, worker, gateway = stack
    name = ready_pod(api, namespace, worker, gateway)
    try:
        with connect(f"{gateway.ws_url}/ws/duplex/omni_drain") as ws:
            assert json.loads(ws.recv(timeout=10)) == {"type": "queue_done"}
            api.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": {labels.DRAIN: "true"}}})
            wait_until(lambda: workers(gateway)[name]["draining"], 10, "the drain to be seen")
            ws.send(json.dumps({"type": "prepare"}))
            while json.loads(ws.recv(timeout=10))["type"] != "prepared":
                pass  # the running session still works
        wait_until(lambda: workers(gateway)[name]["status"] == "idle", 10, "the session to end")
        assert chat_status(gateway) == 503  # free now, but drained: no new work
    finally:
        remove(api, namespace, gateway, name)


def test_discovery_survives_an_api_server_restart(stack, k8s_cluster):
    api, namespace, worker, gateway = stack
    first = ready_pod(api, namespace, worker, gateway)
    k8s_cluster.restart_apiserver()
    back = time.monotonic()  # the API server answers /readyz again
    assert routable(gateway, first)  # last known workers kept through the outage
    assert chat_status(gateway) == 200
    second = ready_pod(api, namespace, worker, gateway, index=1)  # seen: the watch came back
    record({"test": "discovery after an API server restart", "new_pod_routable_s": round(time.monotonic() - back, 2)})
    remove(api, namespace, gateway, first)
    remove(api, namespace, gateway, second)
