"""Benchmark 4: how fast the gateway follows worker pods on a real API server.

The local cluster's control plane (`scripts/cluster/`), no node: worker pods carry the operator's
labels but no scheduler places them, and the benchmark plays the kubelet by patching their status
(Ready, podIP 127.0.0.1, the port annotation pointing at a simulated worker on loopback). The
gateway runs in Kubernetes mode (`--deployment --namespace --kubeconfig`, watch-based discovery).
Ready -> routed: a chat request waits in the gateway's queue while no worker exists; the clock
starts just before the status patch that makes a pod Ready and stops when that request's answer
arrives, i.e. when the first request was routed to the new worker and served (zero-delay worker).
Deleted -> not routed: the clock starts just before the pod's deletion and stops when the gateway's
`/workers` no longer offers it (gone, or not ready; polled every 5 ms). Not Ready -> not routed: the same for a status
patch to Ready=False.
"""

from __future__ import annotations

import threading
import time

import httpx

from tests.fixtures.processes import launch_worker, launch_gateway

from .cluster import api, local_cluster, ready_status, scratch_namespace, unscheduled_worker_pod
from .context import Context
from .procs import ProcessGroup, wait_until
from .report import Section, Table, Target
from .stats import fmt, percentile

KEY = "discovery"
TITLE = "4. Discovery"
TARGETS = ["pod Ready -> first request routed: p99 < 1 s", "pod deleted -> no new work: p99 < 1 s"]
DEPLOYMENT = "bench"
POLL_S = 0.005


def _listed(gateway_url: str, pod: str) -> dict | None:
    workers = httpx.get(f"{gateway_url}/workers", timeout=5).json()["workers"]
    return next((w for w in workers if w["worker_id"] == pod), None)


def _routable(info: dict | None) -> bool:
    return bool(info and info.get("ready") and not info.get("draining"))


def measure(core_v1, namespace: str, gateway_url: str, worker_port: int, trials: int) -> dict[str, list[float]]:
    from kubernetes import client

    samples: dict[str, list[float]] = {"ready": [], "deleted": [], "not_ready": []}
    body_chat = {"messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(timeout=60) as http:
        for trial in range(trials):
            pod = f"worker-{trial}"
            core_v1.create_namespaced_pod(namespace, unscheduled_worker_pod(DEPLOYMENT, pod, trial, worker_port))
            wait_until(lambda: _listed(gateway_url, pod) is None or not _routable(_listed(gateway_url, pod)),
                       30, "new pod not routable yet")
            # A request that can only be served once this pod is routable.
            answered: dict[str, float] = {}

            def ask() -> None:
                response = http.post(f"{gateway_url}/api/chat", json=body_chat)
                answered["t"] = time.monotonic()
                answered["status"] = response.status_code

            asker = threading.Thread(target=ask)
            asker.start()
            wait_until(lambda: httpx.get(f"{gateway_url}/api/queue", timeout=5).json().get("queue_length", 0) >= 1,
                       30, "chat request queued")
            started = time.monotonic()
            core_v1.patch_namespaced_pod_status(pod, namespace, ready_status(True))
            asker.join(60)
            if answered.get("status") != 200:
                raise RuntimeError(f"queued chat answered {answered.get('status')} after the pod became Ready")
            samples["ready"].append(answered["t"] - started)

            if trial % 2 == 0:
                started = time.monotonic()
                core_v1.patch_namespaced_pod_status(pod, namespace, ready_status(False))
                wait_until(lambda: not _routable(_listed(gateway_url, pod)), 30, "not-ready pod unroutable",
                           interval=POLL_S)
                samples["not_ready"].append(time.monotonic() - started)
            started = time.monotonic()
            core_v1.delete_namespaced_pod(pod, namespace, body=client.V1DeleteOptions(grace_period_seconds=0))
            wait_until(lambda: not _routable(_listed(gateway_url, pod)), 30, "deleted pod unroutable",
                       interval=POLL_S)
            samples["deleted"].append(time.monotonic() - started)
            wait_until(lambda: _listed(gateway_url, pod) is None, 30, "deleted pod forgotten")
    return samples


def run(ctx: Context) -> Section:
    trials = 5 if ctx.quick else 20
    log_dir = ctx.dir("discovery").resolve()
    with local_cluster() as cluster, api(cluster) as api_client, ProcessGroup(log_dir) as group:
        from kubernetes import client

        core_v1 = client.CoreV1Api(api_client)
        with scratch_namespace(core_v1, "bench-discovery") as namespace:
            worker = group.adopt(launch_worker(log_dir, zero_delay=True))
            gateway = group.adopt(launch_gateway(log_dir, None, args=[
                "--deployment", DEPLOYMENT, "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig)]))
            samples = measure(core_v1, namespace, gateway.url, worker.port, trials)
    return _section(samples, trials)


def _section(samples: dict[str, list[float]], trials: int) -> Section:
    names = {"ready": "pod Ready -> first request routed and answered",
             "not_ready": "pod not Ready -> no new work",
             "deleted": "pod deleted -> no new work"}
    rows = []
    for key, label in names.items():
        ms = [s * 1000 for s in samples[key]]
        rows.append([label, str(len(ms)), fmt(percentile(ms, 50), 1), fmt(percentile(ms, 99), 1), fmt(max(ms) if ms else None, 1)])
    ready99 = percentile(samples["ready"], 99)
    deleted99 = percentile(samples["deleted"], 99)
    method = " ".join(__doc__.split("\n", 1)[1].split())
    section = Section(KEY, TITLE, method, [Table(["transition", "trials", "p50 ms", "p99 ms", "max ms"], rows)], [
        Target(TARGETS[0], ready99 < 1.0, f"p99 {ready99 * 1000:.1f} ms"),
        Target(TARGETS[1], deleted99 < 1.0, f"p99 {deleted99 * 1000:.1f} ms"),
    ])
    section.notes.append(f"{trials} pods, one after another; p99 of {trials} samples is close to their maximum.")
    return section
