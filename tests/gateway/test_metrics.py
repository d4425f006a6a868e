"""`/metrics`: every promised family exists with its label values pre-created, and promtool accepts it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

FAMILIES = {
    "omnikube_gateway_queue_length", "omnikube_gateway_queue_wait_seconds", "omnikube_gateway_eta_seconds",
    "omnikube_gateway_workers", "omnikube_gateway_active_sessions", "omnikube_gateway_requests",
    "omnikube_gateway_request_duration_seconds", "omnikube_gateway_discovery_events", "omnikube_gateway_watch_restarts",
    "omnikube_gateway_worker_failures",
}


def test_every_gateway_metric_family_is_exported_with_bounded_pre_created_labels(gateway_app):
    gateway_app.post("/api/chat", content=b"not json")  # one bad request, counted
    text = gateway_app.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text) if f.name.startswith("omnikube_gateway_")}
    assert FAMILIES <= set(families)
    eta_types = {s.labels["task_type"] for s in families["omnikube_gateway_eta_seconds"].samples}
    assert eta_types == {"chat", "streaming", "half_duplex", "audio_duplex", "omni_duplex"}
    bad = [s for s in families["omnikube_gateway_requests"].samples
           if s.name.endswith("_total") and s.labels == {"task_type": "chat", "outcome": "bad_request"}]
    assert bad and bad[0].value >= 1


def test_promtool_accepts_the_exposition(gateway_app):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: run scripts/setup.d/40-prometheus.sh (make test does)")
    result = subprocess.run([promtool, "check", "metrics"], input=gateway_app.get("/metrics").content, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
