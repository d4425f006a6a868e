"""scripts/run-local.sh starts simulated workers and a gateway that serves; stop-local.sh stops exactly those."""

from __future__ import annotations

import json
import os
import subprocess

import httpx

from tests.fixtures.processes import REPO, free_port


def test_run_local_starts_a_working_stack_and_stop_local_stops_exactly_it(tmp_path):
    config = tmp_path / "config.json"
    base, gateway_port = free_port(), free_port()
    config.write_text(json.dumps({"service": {"worker_base_port": base, "gateway_port": gateway_port, "data_dir": str(tmp_path / "data")}}))
    env = dict(os.environ, OMNIKUBE_CONFIG=str(config), OMNIKUBE_RUN_DIR=str(tmp_path / "run"))
    started = subprocess.run(["bash", "scripts/run-local.sh", "--http", "--simulated", "1"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=240)
    pids = [int(line.split()[0]) for line in (tmp_path / "run" / "omnikube-local.pids").read_text().splitlines()]
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "SIMULATED" in started.stdout and f"http://localhost:{gateway_port}/" in started.stdout
        reply = httpx.post(f"http://127.0.0.1:{gateway_port}/api/chat", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert reply.status_code == 200 and reply.json()["simulated"] is True
        again = subprocess.run(["bash", "scripts/run-local.sh", "--http"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        stopped = subprocess.run(["bash", "scripts/stop-local.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0
    assert len(pids) == 2
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
