"""The chart's alert rules, rendered from the PrometheusRule template, pass `promtool check rules`
and the `promtool test rules` unit tests in alerts.test.yaml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.fixtures.packaging import PROMTOOL, rules_file

HERE = Path(__file__).parent


def _write_rules(tmp_path: Path, values: dict | None = None) -> Path:
    path = tmp_path / "omnikube.rules.yaml"
    path.write_text(yaml.safe_dump(rules_file(values)))
    return path


def test_rendered_alert_rules_pass_promtool_check(tmp_path):
    proc = subprocess.run([PROMTOOL, "check", "rules", str(_write_rules(tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 4 rules found" in proc.stdout


def test_alerts_fire_and_clear_as_the_promtool_unit_tests_expect(tmp_path):
    _write_rules(tmp_path)
    shutil.copy(HERE / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    proc = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "alerts.test.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_queue_wait_threshold_comes_from_the_chart_values():
    rules = rules_file({"prometheusRule.queueWaitP90ThresholdSeconds": 45, "prometheusRule.queueWaitFor": "3m"})
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r["alert"] == "OmnikubeQueueWaitHigh"]
    assert rule["expr"].rstrip().endswith("> 45")
    assert rule["for"] == "3m"
