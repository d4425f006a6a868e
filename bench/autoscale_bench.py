"""Benchmark 7: the operator's autoscaler.

Time from a queue forming to a new worker serving it, and from the load ending to the workers being gone.

The local cluster's control plane, the real `omnikube-operator` (default 10 s periodic look, so the
autoscaler looks at the gateway once every 10 s) and a real gateway process in discovery mode; the
tests' simulated kubelet runs each worker pod as a simulated worker process on loopback whose model
load takes `load_s` (0 s, and the seed's measured 16 s), and marks the pod Ready once loaded.
OmniDeployment: autoscaling on, min 1, max 2, target queue wait 5 s, scale-up window 0 s, scale-down
window 30 s. One omni-duplex session holds the only worker; the clock starts when a second client
connects and is queued, and stops when that client is told `queue_done` (its session got the new
worker): queue -> routable. Then both close; the clock starts at the close and stops when one worker
pod is left: load ended -> scaled down (the scale-down window plus up to one look).
"""

from __future__ import annotations

import contextlib
import json
import time

from websockets.sync.client import connect

from tests.fixtures import omnideployment as od_fixtures
from tests.fixtures.processes import launch_gateway

from .cluster import api, local_cluster, scratch_namespace
from .context import Context
from .operator_bench import NO_NODE, operator_session
from .procs import wait_until
from .report import Section, Table
from .stats import fmt

KEY = "autoscale"
TITLE = "7. Autoscaling"
TARGETS = []  # the issue sets no target; figures only
DOWN_WINDOW_S = 30


def spec(gateway_port: int) -> dict:
    sample = od_fixtures.load_sample("simulated")["spec"]
    scaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 2, "targetQueueWaitSeconds": 5,
               "scaleUpStabilizationSeconds": 0, "scaleDownStabilizationSeconds": DOWN_WINDOW_S}
    return {**sample,
            "workers": {**sample["workers"], "replicas": 1, "nodeSelector": NO_NODE, "autoscaling": scaling},
            "gateway": {**sample["gateway"], "replicas": 1, "http": True, "nodeSelector": NO_NODE},
            "service": {**sample.get("service", {}), "gatewayPort": gateway_port}}


def _served(ws) -> None:
    """Read frames (queued, queue updates) until the gateway hands the session a worker."""
    while True:
        frame = json.loads(ws.recv(timeout=300))
        if frame.get("type") == "queue_done":
            return
        if frame.get("type") not in ("queued", "queue_update"):
            raise RuntimeError(f"the session was not served: {frame}")


def one_round(omni, cluster, log_dir, name: str, load_s: float) -> tuple[float, float]:
    gateway = launch_gateway(log_dir, None, args=["--deployment", name, "--namespace", omni.namespace,
                                                  "--kubeconfig", str(cluster.kubeconfig)])
    kubelet = od_fixtures.SimKubelet(omni, name, log_dir, load_s)
    try:
        omni.create(name, spec(gateway.port))
        kubelet.start()
        wait_until(lambda: (omni.condition(name, "Ready").get("status") == "True"), 120, f"{name} Ready", interval=0.2)
        with contextlib.ExitStack() as stack:
            holder = stack.enter_context(connect(f"{gateway.ws_url}/ws/duplex/omni_holder"))
            _served(holder)
            started = time.monotonic()
            queued = stack.enter_context(connect(f"{gateway.ws_url}/ws/duplex/omni_queued"))
            _served(queued)  # queued first, then handed the new worker
            up_s = time.monotonic() - started
        started = time.monotonic()
        wait_until(lambda: len(omni.live_worker_names(name)) == 1, DOWN_WINDOW_S + 120, f"{name} back to 1",
                   interval=0.2)
        down_s = time.monotonic() - started
        return up_s, down_s
    finally:
        kubelet.stop()
        gateway.kill()


def run(ctx: Context) -> Section:
    loads = [0.0] if ctx.quick else [0.0, 16.0]
    log_dir = ctx.dir("autoscale").resolve()
    rows = []
    with local_cluster() as cluster, api(cluster) as api_client:
        from kubernetes import client

        from omnikube_operator.kube import Kube

        with scratch_namespace(client.CoreV1Api(api_client), "bench-autoscale") as namespace, \
                operator_session(cluster, namespace, log_dir) as start_operator:
            start_operator("--resync-seconds", "10")
            omni = od_fixtures.Omni(cluster=cluster, namespace=namespace, api=Kube(api_client))
            for i, load_s in enumerate(loads):
                up_s, down_s = one_round(omni, cluster, log_dir, f"scale-{i}", load_s)
                rows.append([fmt(load_s, 0), fmt(up_s, 1), fmt(down_s, 1)])
    method = " ".join(__doc__.split("\n", 1)[1].split())
    section = Section(KEY, TITLE, method, [
        Table(["model load (s)", "queue formed -> new worker serving it (s)", "load ended -> scaled down (s)"], rows),
    ], [])
    section.notes.append(f"Scale-down waits the {DOWN_WINDOW_S} s window by design; the rest is the operator's look "
                         "interval (10 s), the drain of an idle worker (one more look) and the API server.")
    return section
