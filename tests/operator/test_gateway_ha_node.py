"""The gateway survives losing a pod, on the real node through the real Service (kube-proxy):
with two replicas, a gateway pod deleted while clients keep connecting costs no request; with one,
the Service answers again once the replacement is ready. Each run records the longest stretch of
refused or failed requests (tests/fixtures/reliability.py)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from omnikube import labels
from tests.fixtures.omnideployment import eventually, load_sample
from tests.fixtures.reliability import record

pytestmark = [pytest.mark.cluster, pytest.mark.node]


@dataclass
class Prober:
    """New connections to `url` one after another, each outcome time-stamped."""

    url: str
    outcomes: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        # No keep-alive: every request is a new connection, as a new client's would be.
        with httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self._stop.is_set():
                try:
                    outcome = "ok" if client.get(self.url).status_code == 200 else "http-error"
                except httpx.ConnectError:
                    outcome = "refused"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.outcomes.append((time.monotonic(), outcome))
                time.sleep(0.02)

    def __enter__(self) -> "Prober":
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def failures(self) -> list[str]:
        return [outcome for _, outcome in self.outcomes if outcome != "ok"]

    def longest_gap_s(self) -> float:
        """Longest time between the last success before a failure and the next success."""
        gap, last_ok, failing = 0.0, None, False
        for at, outcome in self.outcomes:
            if outcome == "ok":
                if failing and last_ok is not None:
                    gap = max(gap, at - last_ok)
                last_ok, failing = at, False
            else:
                failing = True
        return gap


def ready_endpoints(omni, name: str) -> list[str]:
    out = omni.cluster.kubectl("get", "endpoints", "-n", omni.namespace, f"{name}-gateway", "-o", "json", check=False)
    endpoints = json.loads(out.stdout) if out.returncode == 0 else {}
    return [a["targetRef"]["name"] for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []]


def gateway_pods(omni, name: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in omni.pods(name, labels.COMPONENT_GATEWAY)
                  if not p["metadata"].get("deletionTimestamp"))


def create_simulated(omni, start_operator, workers: dict | None = None, **sections: dict) -> str:
    """The simulated sample with one worker (the node's few GPUs are shared), `workers` and other
    spec sections merged in, created with an operator running; returns its name."""
    sample = load_sample("simulated")
    name, spec = sample["metadata"]["name"], sample["spec"]
    spec["workers"].update({"replicas": 1, **(workers or {})})
    for section, values in sections.items():
        spec[section] = {**spec.get(section, {}), **values}
    start_operator()
    omni.create(name, spec)
    return name


@pytest.mark.parametrize("replicas", [2, 1], ids=["two-gateways", "one-gateway"])
def test_a_deleted_gateway_pod_costs_no_request_with_two_replicas(omni, start_operator, omnikube_images, replicas):
    name = create_simulated(omni, start_operator, gateway={"replicas": replicas})
    omni.wait_condition(name, "Ready", "True", timeout=240)
    eventually(lambda: len(ready_endpoints(omni, name)) == replicas, 60, f"{replicas} gateway endpoints")
    service = omni.child("v1", "Service", f"{name}-gateway")
    url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/health"
    victim = gateway_pods(omni, name)[0]

    with Prober(url) as prober:
        eventually(lambda: len(prober.outcomes) > 20, 10, "requests flowing")
        deleted_at = time.monotonic()
        omni.cluster.kubectl("delete", "pod", "-n", omni.namespace, victim, "--wait=false")
        eventually(lambda: victim not in gateway_pods(omni, name) and len(ready_endpoints(omni, name)) == replicas
                   and victim not in ready_endpoints(omni, name), 90, "the replacement gateway in the Service")
        back_at = time.monotonic()
        # Until the old pod is really gone (preStop pause, then its shutdown).
        eventually(lambda: omni.child("v1", "Pod", victim) is None, 90, f"{victim} to be gone")
        seen = len(prober.outcomes)
        eventually(lambda: len(prober.outcomes) >= seen + 20, 10, "requests after the old pod is gone")
    failures = prober.failures()
    record({"test": "gateway pod deleted", "gateway_replicas": replicas, "requests": len(prober.outcomes),
            "failed": len(failures), "refused": failures.count("refused"), "longest_gap_s": round(prober.longest_gap_s(), 2),
            "replacement_in_service_s": round(back_at - deleted_at, 2)})
    if replicas >= 2:
        assert failures == [], f"{len(failures)} of {len(prober.outcomes)} requests failed: {sorted(set(failures))}"
    else:
        assert prober.outcomes[-1][1] == "ok", "the Service does not answer after the gateway came back"
