"""Autoscaling on the real local API server, with real gateway and simulated worker processes.

The gateway runs as a process in discovery mode (it watches the worker pods through the API, as in
a cluster); `sim_kubelet` runs each worker pod the operator makes as a simulated worker on loopback
and marks it Ready once loaded. Clients hold omni-duplex sessions through the gateway; those that
find no free worker queue there, and the operator reads that queue from the gateway's /metrics.
Windows are small so that each test lasts a few seconds.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator

import pytest
from websockets.sync.client import connect

from omnikube import labels
from tests.fixtures.omnideployment import eventually
from tests.operator.test_operator_cluster import spec as base_spec

pytestmark = pytest.mark.cluster

TARGET_S = 5  # the gateway's first ETA for a queued omni-duplex session is its 90 s baseline


def spec(gateway_port: int, replicas: int = 1, **autoscaling: Any) -> dict[str, Any]:
    scaling = {"enabled": True, "minReplicas": 1, "maxReplicas": 4, "targetQueueWaitSeconds": TARGET_S,
               "scaleUpStabilizationSeconds": 0, "scaleDownStabilizationSeconds": 2, **autoscaling}
    return base_spec(replicas=replicas, workers={"autoscaling": scaling},
                     gateway={"replicas": 1, "http": True}, service={"gatewayPort": gateway_port})


@pytest.fixture
def gateway_for(start_gateway, k8s_cluster, namespace):
    """`gateway_for(name)`: a gateway process discovering the worker pods of OmniDeployment `name`."""
    def start(name: str):
        return start_gateway(None, args=["--deployment", name, "--namespace", namespace,
                                         "--kubeconfig", str(k8s_cluster.kubeconfig)])
    return start


class Client:
    """One omni-duplex session through the gateway: queued until a worker is free, then held."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.served = False

    def poll(self) -> bool:
        """True once the gateway handed this session a worker (reads frames without blocking long)."""
        while not self.served:
            try:
                frame = json.loads(self.ws.recv(timeout=0.05))
            except TimeoutError:
                return False
            self.served = frame.get("type") == "queue_done"
        return True

    def still_served(self) -> bool:
        """The session is alive: the worker behind it answers a prepare."""
        self.ws.send(json.dumps({"type": "prepare", "system_prompt": "still here?"}))
        return json.loads(self.ws.recv(timeout=10)).get("type") == "prepared"


@contextlib.contextmanager
def clients(gateway, names: list[str]) -> Iterator[dict[str, Client]]:
    with contextlib.ExitStack() as stack:
        yield {name: Client(stack.enter_context(connect(f"{gateway.ws_url}/ws/duplex/omni_{name}", open_timeout=10)))
               for name in names}


def replicas(omni, name: str) -> int:
    return omni.get(name)["spec"]["workers"]["replicas"]


def autoscaling(omni, name: str) -> dict[str, Any]:
    return omni.status(name).get("autoscaling") or {}


def test_a_burst_of_queued_sessions_scales_up_and_the_queue_drains(omni, start_operator, gateway_for, sim_kubelet):
    gateway = gateway_for("burst")
    start_operator()
    omni.create("burst", spec(gateway.port))
    sim_kubelet("burst")
    omni.wait_condition("burst", "Ready", "True")
    with clients(gateway, ["a", "b", "c", "d"]) as burst:
        eventually(lambda: replicas(omni, "burst") == 4, 60, "4 workers asked for (1 busy + 3 queued)")
        eventually(lambda: all(c.poll() for c in burst.values()), 60, "every queued session to get a worker")
        assert gateway.get("/status").json()["queue_length"] == 0
        assert omni.live_worker_names("burst") == [f"burst-worker-{i}" for i in range(4)]
    scaled = [e for e in omni.events("burst") if e["reason"] == "ScaledUp"]
    assert scaled and "queued" in scaled[0]["message"] and f"target {TARGET_S}s" in scaled[0]["message"]


def test_when_the_load_ends_it_scales_back_to_min_without_cutting_a_live_session(
        omni, start_operator, gateway_for, sim_kubelet):
    gateway = gateway_for("calm")
    start_operator()
    omni.create("calm", spec(gateway.port, replicas=3, scaleDownStabilizationSeconds=60))
    sim_kubelet("calm")
    omni.wait_condition("calm", "Ready", "True")
    with clients(gateway, ["x", "y", "z"]) as held:
        eventually(lambda: all(c.poll() for c in held.values()), 30, "three sessions served")
        busy = {w["name"] for w in eventually(lambda: [w for w in omni.status("calm")["workers"]
                                                       if w.get("workerStatus") == "duplex_active"], 30,
                                              "busy workers in status")}
        omni.patch_spec("calm", {"workers": {"autoscaling": {"scaleDownStabilizationSeconds": 2}}})
        held["x"].ws.close()
        held["y"].ws.close()
        omni.wait_workers("calm", [eventually(lambda: _holder(omni, "calm"), 30, "one busy worker left")], timeout=60)
        assert replicas(omni, "calm") == 1
        assert held["z"].still_served()
        assert _holder(omni, "calm") in busy
    assert any(e["reason"] == "ScaledDown" for e in omni.events("calm"))


def _holder(omni, name: str) -> str | None:
    holders = [w["name"] for w in omni.status(name).get("workers") or [] if w.get("workerStatus") == "duplex_active"]
    return holders[0] if len(holders) == 1 else None


def test_flapping_load_does_not_flap_replicas(omni, start_operator, gateway_for, sim_kubelet):
    gateway = gateway_for("flap")
    start_operator()
    omni.create("flap", spec(gateway.port, replicas=2, scaleDownStabilizationSeconds=30))
    sim_kubelet("flap")
    omni.wait_condition("flap", "Ready", "True")
    with clients(gateway, ["steady"]) as steady:
        eventually(steady["steady"].poll, 30, "the steady session served")
        for round_ in range(3):  # a second session comes and goes: busy workers go 2, 1, 2, 1, ...
            with clients(gateway, [f"blip{round_}"]) as blip:
                eventually(blip[f"blip{round_}"].poll, 30, "the blip served")
                eventually(lambda: autoscaling(omni, "flap").get("busyWorkers") == 2, 30, "2 busy seen")
            eventually(lambda: autoscaling(omni, "flap").get("busyWorkers") == 1, 30, "1 busy seen")
            held = autoscaling(omni, "flap")
            assert held["decision"] == "Hold" and "30s scale-down window" in held["reason"], held
            assert replicas(omni, "flap") == 2
    assert not any(e["reason"] in ("ScaledDown", "ScaledUp") for e in omni.events("flap"))


def test_an_operator_restarted_mid_scale_converges_without_duplicate_pods(
        omni, start_operator, gateway_for, sim_kubelet):
    gateway = gateway_for("again")
    operator = start_operator()
    omni.create("again", spec(gateway.port))
    sim_kubelet("again", load_s=1.0)  # new workers take a while to load, so the restart lands mid-scale
    omni.wait_condition("again", "Ready", "True")
    with clients(gateway, ["a", "b", "c", "d"]) as burst:
        eventually(lambda: replicas(omni, "again") == 4, 30, "the scale-up decision")
        operator.restart()  # SIGKILL while the new workers are being created or loading
        eventually(lambda: all(c.poll() for c in burst.values()), 60, "every queued session to get a worker")
        names = [p["metadata"]["name"] for p in omni.pods("again")]
        assert sorted(names) == [f"again-worker-{i}" for i in range(4)], names
        assert replicas(omni, "again") == 4
    assert labels.DRAIN not in str([p["metadata"].get("annotations") for p in omni.pods("again")])
