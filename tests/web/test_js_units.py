"""The web UI's JavaScript unit tests (tests/js, node's built-in test runner), run from pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_javascript_unit_tests_pass_under_node():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; scripts/setup.d/50-browser.sh installs it")
    result = subprocess.run(
        [node, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    summary = "\n".join(line for line in result.stdout.splitlines() if line.startswith("# "))
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert "# fail 0" in summary and "# pass " in summary, summary
