"""The local Kubernetes cluster for the discovery and operator benchmarks.

Reuses the test fixtures' own session logic (`tests/fixtures/cluster.py`, `k8s_cluster`): an
already running cluster is shared and left running; one started here is stopped at the end unless
another user (a pytest session) still holds it.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any, Iterator

from omnikube import labels
from tests.fixtures import cluster as fixtures

Cluster = fixtures.Cluster


@contextlib.contextmanager
def local_cluster() -> Iterator[Cluster]:
    with contextlib.contextmanager(fixtures.k8s_cluster.__wrapped__)() as cluster:
        yield cluster


@contextlib.contextmanager
def api(cluster: Cluster) -> Iterator[Any]:
    """A `kubernetes` ApiClient for the cluster's kubeconfig."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def scratch_namespace(core_v1: Any, prefix: str) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (not waited for)."""
    from kubernetes import client

    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    fixtures.eventually(lambda: core_v1.read_namespaced_service_account("default", name), 30,
                        f"service account default in {name}")
    try:
        yield name
    finally:
        try:
            core_v1.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)
        except Exception:  # noqa: BLE001 - cleanup is best effort
            pass


def unscheduled_worker_pod(deployment: str, name: str, index: int, port: int) -> dict:
    """A worker pod as the operator labels it, which no scheduler will place: the benchmark plays
    the kubelet by patching its status (Ready, podIP 127.0.0.1) to point at a loopback worker."""
    meta_labels = labels.common_labels(deployment, labels.COMPONENT_WORKER) | {labels.WORKER_INDEX: str(index)}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": meta_labels, "annotations": {labels.WORKER_PORT: str(port)}},
        "spec": {"schedulerName": "omnikube-bench-no-scheduler", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "worker", "image": "omnikube/worker:bench", "imagePullPolicy": "Never"}]},
    }


def ready_status(ready: bool) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    flag = "True" if ready else "False"
    return {"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": t, "status": flag, "lastTransitionTime": now}
                       for t in ("Initialized", "ContainersReady", "Ready")]
        + [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
    }}
