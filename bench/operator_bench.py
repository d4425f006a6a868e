"""Benchmark 5: how fast the operator turns OmniDeployments into their children, and repairs them.

The local cluster (pods are created but never scheduled, by a node selector nothing matches, which
is all these figures need) and the real `omnikube-operator` as a subprocess watching one
namespace, with its default resync period (10 s), started by the test fixtures' launcher. A
warm-up OmniDeployment is reconciled first, so kopf's start-up is not counted. For 1, 8 and 64
workers: time from the create call to every child existing (the worker pods and the gateway
Deployment), and to the status saying this generation was reconciled with that many desired
workers. Then 100 OmniDeployments of one worker each, created back to back in the same operator:
time until all have their children, with the operator's CPU and RSS. Then a worker pod deleted:
time until its replacement exists.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from omnikube import labels
from tests.fixtures import omnideployment as od_fixtures

from .cluster import api, local_cluster, scratch_namespace
from .context import Context
from .procs import CpuMeter, wait_until
from .report import Section, Table
from .stats import fmt, percentile

KEY = "operator"
TITLE = "5. Operator"
TARGETS = []  # the issue sets no target for the operator; figures only


# The cluster may have a node (tests start one): pods of these OmniDeployments must never run on it.
NO_NODE = {"omnikube.dev/benchmark": "never-scheduled"}


def spec(workers: int) -> dict[str, Any]:
    """The repository's simulated-backend sample, with `workers` worker pods, none of which (nor the
    gateway) can be scheduled: a hundred gateways running on a shared 2-core node would measure
    nothing but that node."""
    sample = od_fixtures.load_sample("simulated")["spec"]
    return {**sample, "workers": {**sample["workers"], "replicas": workers, "nodeSelector": NO_NODE},
            "gateway": {**sample["gateway"], "nodeSelector": NO_NODE}}


class Watcher:
    """Counts the children of OmniDeployments in one namespace (two list calls per look)."""

    def __init__(self, omni: od_fixtures.Omni) -> None:
        self.omni = omni

    def pods_by_owner(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        selector = f"{labels.COMPONENT}={labels.COMPONENT_WORKER}"
        for pod in self.omni.api.list("v1", "Pod", self.omni.namespace, selector):
            if not pod["metadata"].get("deletionTimestamp"):
                owner = pod["metadata"]["labels"].get(labels.DEPLOYMENT, "")
                counts[owner] = counts.get(owner, 0) + 1
        return counts

    def gateways(self) -> set[str]:
        selector = f"{labels.COMPONENT}={labels.COMPONENT_GATEWAY}"
        return {d["metadata"]["labels"].get(labels.DEPLOYMENT, "")
                for d in self.omni.api.list("apps/v1", "Deployment", self.omni.namespace, selector)}

    def complete(self, wanted: dict[str, int]) -> bool:
        pods, gateways = self.pods_by_owner(), self.gateways()
        return all(pods.get(name, 0) == n and name in gateways for name, n in wanted.items())

    def reconciled(self, name: str, workers: int) -> bool:
        body = self.omni.get(name) or {}
        status = body.get("status") or {}
        return (status.get("observedGeneration") == body.get("metadata", {}).get("generation")
                and status.get("desiredWorkers") == workers)


def create_and_time(omni, watcher: Watcher, name: str, workers: int, timeout: float) -> tuple[float, float]:
    """Seconds from the create call to all children, and to the status reporting this generation."""
    started = time.monotonic()
    omni.create(name, spec(workers))
    wait_until(lambda: watcher.complete({name: workers}), timeout, f"{name}: children", interval=0.02)
    children = time.monotonic() - started
    wait_until(lambda: watcher.reconciled(name, workers), timeout, f"{name}: status", interval=0.02)
    return children, time.monotonic() - started


@contextlib.contextmanager
def operator_session(cluster, namespace: str, log_dir):
    """The fixtures' operator launcher, and its teardown (stop the operators, lift kopf's
    finalizers) run however the benchmark ends: the generator is resumed, never thrown into."""
    crd = od_fixtures.omnideployment_crd.__wrapped__(cluster)
    session = od_fixtures.start_operator.__wrapped__(cluster, namespace, crd, log_dir)
    start = next(session)
    try:
        yield start
    finally:
        next(session, None)


def run(ctx: Context) -> Section:
    sizes = [1, 8] if ctx.quick else [1, 8, 64]
    many = 20 if ctx.quick else 100
    deletions = 3 if ctx.quick else 10
    log_dir = ctx.dir("operator").resolve()
    timings: dict[int, tuple[float, float]] = {}
    with local_cluster() as cluster, api(cluster) as api_client:
        from kubernetes import client

        from omnikube_operator.kube import Kube

        with scratch_namespace(client.CoreV1Api(api_client), "bench-operator") as namespace, \
                operator_session(cluster, namespace, log_dir) as start_operator:
            operator = start_operator("--resync-seconds", "10")
            omni = od_fixtures.Omni(cluster=cluster, namespace=namespace, api=Kube(api_client))
            watcher = Watcher(omni)
            create_and_time(omni, watcher, "warmup", 1, 120)
            for n in sizes:
                timings[n] = create_and_time(omni, watcher, f"size-{n}", n, 300)
            replaced = [_replace_one(omni, f"size-{max(sizes)}", max(sizes)) for _ in range(deletions)]
            meter = CpuMeter(operator.process.pid)
            started = time.monotonic()
            names = [f"many-{i}" for i in range(many)]
            for name in names:
                omni.create(name, spec(1))
            created_s = time.monotonic() - started
            wait_until(lambda: watcher.complete({name: 1 for name in names}), 600, f"{many} deployments' children",
                       interval=0.2)
            all_children_s = time.monotonic() - started
            wait_until(lambda: all(watcher.reconciled(name, 1) for name in names), 600, f"{many} statuses",
                       interval=0.5)
            all_status_s = time.monotonic() - started
            cpu, rss = meter.stop()
    return _section(timings, replaced, many, created_s, all_children_s, all_status_s, cpu, rss)


def _live_uids(omni, name: str) -> set[str]:
    return {p["metadata"]["uid"] for p in omni.pods(name) if not p["metadata"].get("deletionTimestamp")}


def _replace_one(omni, name: str, workers: int) -> float:
    """Delete one worker pod; seconds until a new pod (a new uid, maybe the same name) takes its place."""
    before = _live_uids(omni, name)
    victim = next(p for p in omni.pods(name) if not p["metadata"].get("deletionTimestamp"))
    started = time.monotonic()
    omni.api.delete("v1", "Pod", omni.namespace, victim["metadata"]["name"])

    def replaced() -> bool:
        now = _live_uids(omni, name)
        return len(now) == workers and bool(now - before)

    wait_until(replaced, 120, f"{name}: {victim['metadata']['name']} replaced", interval=0.01)
    return time.monotonic() - started


def _section(timings, replaced, many, created_s, all_children_s, all_status_s, cpu, rss) -> Section:
    rows = [[str(n), fmt(children * 1000, 0), fmt(status * 1000, 0)] for n, (children, status) in timings.items()]
    ms = [r * 1000 for r in replaced]
    method = " ".join(__doc__.split("\n", 1)[1].split())
    section = Section(KEY, TITLE, method, [
        Table(["workers", "create -> all children (ms)", "create -> status reconciled (ms)"], rows,
              caption="One OmniDeployment:"),
        Table(["OmniDeployments", "create calls done (s)", "all children (s)", "all statuses (s)",
               "operator CPU (cores)", "operator RSS MiB"],
              [[str(many), fmt(created_s, 1), fmt(all_children_s, 1), fmt(all_status_s, 1), fmt(cpu, 2),
                fmt(rss / 2 ** 20, 0)]], caption="Many OmniDeployments of one worker each, in one operator:"),
        Table(["deleted worker pods", "p50 ms", "p99 ms", "max ms"],
              [[str(len(ms)), fmt(percentile(ms, 50), 0), fmt(percentile(ms, 99), 0), fmt(max(ms) if ms else None, 0)]],
              caption="Worker pod deleted -> replacement created:"),
    ], [])
    section.notes.append("No node runs the pods (a node selector nothing matches), so these are the operator's and "
                         "the API server's times alone; "
                         "the operator keeps its default 10 s resync, so anything it only notices on resync shows here.")
    return section
