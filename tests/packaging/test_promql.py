"""Every PromQL expression the chart ships (dashboard panels and alert rules) runs on a real
Prometheus that scrapes a running gateway, worker and operator: it parses, and every series it
selects exists, labels included. A renamed metric or label value fails here, not on a dashboard."""

from __future__ import annotations

import httpx
import pytest
import yaml

from tests.fixtures.packaging import chart_expressions, rules_file, selectors
from tests.fixtures.processes import free_port, wait_until

pytestmark = pytest.mark.cluster  # the operator needs an API server to start

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def scraped(start_worker, start_gateway, start_operator, start_prometheus, tmp_path):
    worker = start_worker(zero_delay=True)
    gateway = start_gateway([worker])
    operator_port = free_port()
    start_operator("--metrics-port", str(operator_port), "--bind", "127.0.0.1")
    # One chat through the gateway, so that the per-type latency histograms have series.
    assert httpx.post(f"{gateway.url}/api/chat", json=CHAT, timeout=30).status_code == 200
    rules = tmp_path / "omnikube.rules.yaml"
    rules.write_text(yaml.safe_dump(rules_file()))
    prometheus = start_prometheus(
        {"gateway": [f"127.0.0.1:{gateway.port}"], "worker": [worker.address], "operator": [f"127.0.0.1:{operator_port}"]},
        rule_files=[rules], labels={"namespace": "omnikube-test"},
    )
    wait_until(lambda: set(prometheus.targets_up().items()) == {("gateway", "up"), ("worker", "up"), ("operator", "up")},
               30, "prometheus to scrape gateway, worker and operator", interval_s=0.5)
    wait_until(lambda: prometheus.vector("count(omnikube_worker_time_to_first_token_seconds_bucket)"), 30,
               "the chat's latency histogram to be scraped", interval_s=0.5)
    return prometheus


def test_every_shipped_expression_parses_and_selects_existing_series(scraped):
    problems = []
    for where, expr in chart_expressions():
        answer = scraped.query(expr)
        if answer["status"] != "success":
            problems.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}\n    {expr}")
            continue
        for selector in selectors(expr):
            if not scraped.vector(f"count({selector})"):
                problems.append(f"{where}: {selector} selects no series")
    assert not problems, "\n".join(problems)


def test_the_alert_rules_load_and_evaluate_cleanly_in_prometheus(scraped):
    def evaluated():
        groups = httpx.get(f"{scraped.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule.get("lastEvaluation", "0001").startswith("0001") is False for rule in rules) else None

    wait_until(lambda: bool(evaluated()), 30, "every rule to be evaluated once", interval_s=0.5)
    rules = evaluated()
    assert sorted(rule["name"] for rule in rules) == [
        "OmnikubeNoReadyWorkers", "OmnikubeQueueWaitHigh", "OmnikubeReconcileErrors", "OmnikubeWorkersFailing"]
    assert all(rule["health"] == "ok" for rule in rules), rules
    # A healthy system with an idle worker and no failures: nothing fires.
    assert all(rule["state"] == "inactive" for rule in rules), rules
