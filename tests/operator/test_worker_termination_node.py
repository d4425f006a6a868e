"""A deleted worker pod on the real node stops by itself on SIGTERM, idle or mid-session: its
container dies with exit code 0 long before the termination grace period (a worker that ignored the
signal would be SIGKILLed at the end of it, exit code 137), and a live duplex session is closed
rather than left hanging. The operator passes the drain that fits the grace period
(`--drain-seconds`). The container's end is read from the node's docker events, because the
kubelet 1.20 often removes the pod object without ever publishing the terminated state, and removes
it seconds to a minute after the container died. Times go to the reliability record
(tests/fixtures/reliability.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.omnideployment import eventually
from tests.fixtures.reliability import record
from tests.operator.test_gateway_ha_node import create_simulated

pytestmark = [pytest.mark.cluster, pytest.mark.node]

GRACE_S = 60  # long, so that "well inside it" cannot be the kubelet's SIGKILL at its end


def pod_gone(omni, pod_name: str, uid: str) -> bool:
    pod = omni.child("v1", "Pod", pod_name)
    return pod is None or pod["metadata"]["uid"] != uid


def container_death(docker_host: str, container_id: str, since: float) -> tuple[float, int] | None:
    """(time, exit code) of the container's `die` event on the node's dockerd since `since`, or None."""
    out = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                          "--filter", f"container={container_id}", "--filter", "event=die",
                          "--format", "{{.TimeNano}} {{.Actor.Attributes.exitCode}}"],
                         env={**os.environ, "DOCKER_HOST": docker_host}, capture_output=True, text=True, timeout=30, check=True)
    lines = out.stdout.split()
    return (int(lines[0]) / 1e9, int(lines[1])) if lines else None


class DuplexSession:
    """A /ws/duplex session straight to the worker pod, prepared, kept open in a thread."""

    def __init__(self, url: str) -> None:
        self.url, self.prepared, self.closed_at, self.close_code = url, threading.Event(), None, None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        async with connect(self.url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "prepare", "system_prompt": "Be brief."}))
            assert json.loads(await ws.recv())["type"] == "prepared"
            self.prepared.set()
            try:
                async for _ in ws:
                    pass
            except ConnectionClosed:
                pass
            finally:
                self.closed_at, self.close_code = time.time(), ws.close_code


@pytest.mark.parametrize("mid_session", [False, True], ids=["idle", "mid-session"])
def test_a_deleted_worker_pod_stops_on_sigterm_well_inside_its_grace(omni, start_operator, omnikube_images, mid_session):
    name = create_simulated(omni, start_operator, workers={"terminationGracePeriodSeconds": GRACE_S})
    omni.wait_condition(name, "Ready", "True", timeout=240)
    pod_name = f"{name}-worker-0"
    pod = omni.child("v1", "Pod", pod_name)
    assert pod["spec"]["terminationGracePeriodSeconds"] == GRACE_S
    command = pod["spec"]["containers"][0]["command"]
    assert float(command[command.index("--drain-seconds") + 1]) < GRACE_S
    uid = pod["metadata"]["uid"]
    session = None
    if mid_session:
        port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
        session = DuplexSession(f"ws://{pod['status']['podIP']}:{port}/ws/duplex?session_id=term_1")
        assert session.prepared.wait(30), "the duplex session never got prepared"

    (container_id,) = [c["containerID"].split("://", 1)[1] for c in pod["status"]["containerStatuses"] if c["name"] == "worker"]
    deleted_at = time.time()
    omni.cluster.kubectl("delete", "pod", "-n", omni.namespace, pod_name, "--wait=false")
    died_at, exit_code = eventually(lambda: container_death(omnikube_images.docker_host, container_id, deleted_at - 1),
                                    GRACE_S / 2, "the worker container to stop by itself")
    assert exit_code == 0, f"the worker exited {exit_code} after SIGTERM"
    if session is not None:
        eventually(lambda: session.closed_at is not None, 10, "the duplex session to be closed")
        assert session.close_code == 1012, session.close_code  # "service restart": the client may retry
    eventually(lambda: pod_gone(omni, pod_name, uid), 180, f"the old {pod_name} to be gone from the API")
    record({"test": "worker pod deleted", "mid_session": mid_session, "grace_s": GRACE_S,
            "container_exit_s": round(died_at - deleted_at, 2),
            "session_closed_s": round(session.closed_at - deleted_at, 2) if session else None,
            "pod_gone_s": round(time.time() - deleted_at, 1)})
