"""Dashboard panels computed by Prometheus's own engine (`promtool test rules` with
promql_expr_test) on series shaped like the gateways': each panel shows what it is titled."""

from __future__ import annotations

import subprocess

import yaml

from tests.fixtures.packaging import GRAFANA_VARIABLES, PROMTOOL, dashboard_expressions

ABLE_PANEL = "Workers able to take work"


def _series(instance: str, state: str, value: int) -> dict:
    return {"series": f'omnikube_gateway_workers{{namespace="team-a", job="gw", instance="{instance}", state="{state}"}}',
            "values": f"{value}x5"}


def test_workers_able_to_take_work_sums_the_states_and_counts_two_gateway_replicas_once(tmp_path):
    (expr,) = [e for title, e in dashboard_expressions() if title == ABLE_PANEL]
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    # Two gateway replicas both see the same three workers: one idle, one in a duplex session,
    # one busy, and one still loading (not able to take work).
    series = [_series(gw, state, 1) for gw in ("gw-1", "gw-2") for state in ("idle", "duplex", "busy", "loading")]
    tests = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{"expr": expr, "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": 3}]}],
    }]}
    path = tmp_path / "panels.test.yaml"
    path.write_text(yaml.safe_dump(tests))
    proc = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
