"""The one rule that turns a worker pod into an address (operator and gateway both use it)."""

from __future__ import annotations

from omnikube import labels
from omnikube.workers import is_busy, pod_address, pod_url


def pod(ip: str | None, port: str | None = None, index: str = "2") -> dict:
    annotations = {labels.WORKER_PORT: port} if port else {}
    return {"metadata": {"annotations": annotations, "labels": {labels.WORKER_INDEX: index}},
            "status": {"podIP": ip} if ip else {}}


def test_the_annotated_port_wins_over_the_index_rule():
    assert pod_address(pod("10.0.0.5", "9000"), base_port=22400) == ("10.0.0.5", 9000)
    assert pod_address(pod("10.0.0.5"), base_port=22400) == ("10.0.0.5", 22402)


def test_an_ipv6_pod_address_is_bracketed_in_urls():
    assert pod_url(pod("fd00::7", "22400")) == "http://[fd00::7]:22400"


def test_no_ip_or_no_port_gives_no_address():
    assert pod_address(pod(None, "22400")) is None
    assert pod_address(pod("10.0.0.5")) is None  # no annotation and no base port


def test_unknown_or_unanswered_status_counts_as_busy():
    assert not is_busy("idle") and is_busy("duplex_active") and is_busy(None) and is_busy("rebooting")
