"""The whole shipped path on the real local node, as a user walks it: build the images, `helm
install` the chart, `kubectl apply` the simulated sample with 2 workers, wait for Ready, hold a chat
and a full-duplex session through the gateway, scrape the gateway and the operator with
Prometheus, scale to 3 and back to 1 while the session runs (it must survive), delete the
OmniDeployment (every child goes), `helm uninstall` (the operator goes).

Durations of each phase are written to artifacts/e2e-durations.json (cold = first run on a machine,
warm = image layers and wheels cached)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from websockets.sync.client import connect

from omnikube import labels
from tests.fixtures.cluster import eventually
from tests.fixtures.packaging import CHART, REPO

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.timeout(1800)]

SAMPLE = REPO / "manifests" / "samples" / "simulated.yaml"
SECOND_OF_AUDIO = base64.b64encode(np.zeros(16000, np.float32).tobytes()).decode()
CHILD_KINDS = "pods,services,deployments,configmaps,serviceaccounts,roles,rolebindings,jobs,persistentvolumeclaims"


class Phases:
    """Wall-clock seconds per phase, saved for the durations report."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = self.started
        self.seconds: dict[str, float] = {}

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self.last, 1)
        self.last = now

    def save(self, images_build_seconds: float) -> None:
        out = REPO / "artifacts" / "e2e-durations.json"
        out.parent.mkdir(exist_ok=True)
        record = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "images_build_s": round(images_build_seconds, 1),
                  "test_s": round(time.monotonic() - self.started, 1), "phases_s": self.seconds}
        history = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps(history + [record], indent=2))
        print(f"e2e durations: {record}")


class DuplexSession:
    """A full-duplex session through the gateway; `step()` sends one second of audio and returns
    the model's result frame."""

    def __init__(self, url: str, session_id: str) -> None:
        # Entered by hand: the session spans several phases of the test, not one block.
        self._connection = connect(f"{url}/ws/duplex/{session_id}", open_timeout=20)
        self.ws = self._connection.__enter__()
        self.steps = 0

    def recv_until(self, kind: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            frame = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            assert frame.get("type") != "error", frame
            if frame.get("type") == kind:
                return frame

    def start(self) -> None:
        self.recv_until("queue_done")
        self.ws.send(json.dumps({"type": "prepare", "system_prompt": "You are a test."}))
        self.recv_until("prepared")

    def step(self) -> dict:
        self.ws.send(json.dumps({"type": "audio_chunk", "audio_base64": SECOND_OF_AUDIO}))
        result = self.recv_until("result")
        self.steps += 1
        return result

    def stop(self) -> None:
        self.ws.send(json.dumps({"type": "stop"}))
        self.recv_until("stopped")
        self._connection.__exit__(None, None, None)


def diagnose(cluster, namespace: str, name: str) -> str:
    """What a person would look at when the sample does not become Ready."""
    parts = []
    for args in (("get", f"omni/{name}", "-o", "jsonpath={.status}"), ("get", "pods,svc,deploy", "-o", "wide"),
                 ("get", "events", "--sort-by=.lastTimestamp"),
                 ("logs", "-l", "app.kubernetes.io/component=operator", "--tail=60")):
        proc = cluster.kubectl("-n", namespace, *args, check=False, timeout=30)
        parts.append(f"$ kubectl {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


@pytest.fixture
def release(k8s_node, namespace):
    """A unique release name; whatever a failed run leaves (the release, its cluster-wide RBAC, an
    OmniDeployment holding the operator's finalizer) is removed at teardown."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    yield name
    cluster = k8s_node
    if cluster.helm("status", name, "--namespace", namespace, check=False).returncode == 0:
        cluster.kubectl("delete", "-n", namespace, "omni", "--all", "--wait=true", "--timeout=60s", check=False, timeout=70)
        cluster.helm("uninstall", name, "--namespace", namespace, check=False)
    for item in json.loads(cluster.kubectl("get", "-n", namespace, "omni", "-o", "json", check=False).stdout or "{}").get("items", []):
        cluster.kubectl("patch", "-n", namespace, f"omni/{item['metadata']['name']}", "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}', check=False)


def test_helm_install_sample_chat_duplex_scrape_scale_delete_uninstall(
        k8s_node, omnikube_images, omnideployment_crd, namespace, release, start_prometheus):
    cluster, phases = k8s_node, Phases()
    sample = yaml.safe_load(SAMPLE.read_text())
    name = sample["metadata"]["name"]
    assert sample["spec"]["backend"]["type"] == "simulated" and sample["spec"]["workers"]["replicas"] == 2

    # 1. helm install; the operator watches only this test's namespace (other tests run their own).
    cluster.helm("install", release, str(CHART), "--namespace", namespace, "--set", "image.tag=dev",
                 "--set", "image.pullPolicy=Never", "--set", f"operator.watchNamespaces={{{namespace}}}",
                 "--wait=watcher", "--timeout", "4m", timeout=300)
    phases.done("helm_install")

    # 2. the sample, Ready with its two workers
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    waited = cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"omni/{name}", "--timeout=300s",
                             check=False, timeout=310)
    assert waited.returncode == 0, diagnose(cluster, namespace, name)
    gateway = cluster.kubectl("get", "-n", namespace, f"svc/{name}-gateway", "-o", "json")
    service = json.loads(gateway.stdout)["spec"]
    url = f"http://{service['clusterIP']}:{service['ports'][0]['port']}"
    eventually(lambda: httpx.get(f"{url}/status", timeout=5).json().get("idle_workers") == 2, 60,
               "the gateway to route to both workers")
    phases.done("sample_ready")

    # 3. a chat and a full-duplex session through the gateway
    chat = httpx.post(f"{url}/api/chat", json={"messages": [{"role": "user", "content": "hello"}]}, timeout=60)
    assert chat.status_code == 200, chat.text
    assert chat.json()["success"] is True and chat.json()["simulated"] is True
    session = DuplexSession(url.replace("http://", "ws://"), "omni_e2e")
    session.start()
    assert "is_listen" in session.step()
    phases.done("chat_and_duplex")

    # 4. Prometheus scrapes the gateway and the operator (through their Services)
    operator_svc = json.loads(cluster.kubectl("get", "-n", namespace, "svc", "-l", "app.kubernetes.io/component=operator",
                                              "-o", "json").stdout)["items"][0]["spec"]
    prometheus = start_prometheus({
        "gateway": [f"{service['clusterIP']}:{service['ports'][0]['port']}"],
        "operator": [f"{operator_svc['clusterIP']}:{operator_svc['ports'][0]['port']}"],
    }, labels={"namespace": namespace})
    eventually(lambda: prometheus.targets_up() == {"gateway": "up", "operator": "up"}, 60, "both targets up")
    eventually(lambda: prometheus.vector('omnikube_gateway_active_sessions{task_type="omni_duplex"} == 1'), 30,
               "the live duplex session in the gateway's metrics")
    eventually(lambda: prometheus.vector('omnikube_operator_managed_deployments == 1'), 30,
               "the operator's metrics to show the sample")
    assert prometheus.vector('omnikube_gateway_requests_total{task_type="chat", outcome="ok"} >= 1')
    phases.done("prometheus_scrape")

    # 5. scale to 3 and back to 1 while the session runs: it keeps answering throughout
    def ready_workers(count: int):
        def check():
            session.step()
            status = json.loads(cluster.kubectl("get", "-n", namespace, f"omni/{name}", "-o", "json").stdout)["status"]
            pods = json.loads(cluster.kubectl("get", "-n", namespace, "pods", "-l", labels.worker_selector(name),
                                              "-o", "json").stdout)["items"]
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            return status.get("readyWorkers") == count and len(pods) == count and len(live) == count
        return check

    cluster.kubectl("scale", "-n", namespace, f"omni/{name}", "--replicas=3")
    eventually(ready_workers(3), 180, "three ready workers, with the session alive")
    cluster.kubectl("scale", "-n", namespace, f"omni/{name}", "--replicas=1")
    eventually(ready_workers(1), 180, "one worker left, with the session alive")
    # The busy worker is the one kept, and the gateway has let go of the others.
    eventually(lambda: [w["status"] for w in httpx.get(f"{url}/workers", timeout=10).json()["workers"]] == ["duplex_active"],
               30, "the gateway to list only the session's worker")
    before = session.steps
    assert "is_listen" in session.step() and session.steps == before + 1
    session.stop()
    phases.done("scale_3_and_1_live")

    # 6. delete the OmniDeployment: every child goes
    cluster.kubectl("delete", "-n", namespace, f"omni/{name}", "--wait=true", "--timeout=120s", timeout=130)
    selector = f"{labels.DEPLOYMENT}={name}"
    eventually(lambda: cluster.kubectl("get", "-n", namespace, CHILD_KINDS, "-l", selector, "-o", "name").stdout.strip() == "",
               120, "every child of the OmniDeployment to be gone")
    phases.done("delete_omnideployment")

    # 7. helm uninstall: the operator and its cluster-wide RBAC go; the CRD stays (helm never deletes CRDs)
    cluster.helm("uninstall", release, "--namespace", namespace, "--wait=watcher", "--timeout", "2m", timeout=150)
    left = cluster.kubectl("get", "-n", namespace, "deployments,services,serviceaccounts", "-l",
                           f"app.kubernetes.io/instance={release}", "-o", "name").stdout.strip()
    assert left == ""
    assert cluster.kubectl("get", "clusterrole", f"{release}-omnikube-operator", check=False).returncode != 0
    assert cluster.kubectl("get", "crd", omnideployment_crd, check=False).returncode == 0
    phases.done("helm_uninstall")
    phases.save(omnikube_images.build_seconds)
