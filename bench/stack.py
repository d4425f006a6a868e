"""Start the pieces under test on loopback: a farm of simulated workers and the real gateway.

The gateway is the installed `omnikube-gateway` console script in static mode (`--workers`), plain
HTTP, started in its own directory so its data and certificates stay out of the repository.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

import httpx

from .procs import Managed, ProcessGroup, console_script, wait_until

ZERO_DELAY = {"OMNIKUBE_SIM_ZERO_DELAY": "1"}


def start_workers(group: ProcessGroup, ports: Sequence[int], sim_env: Mapping[str, str],
                  name: str = "workers", timeout: float = 120.0) -> Managed:
    """One process serving one simulated worker per port; returns once every one reports idle."""
    proc = group.start(name, [sys.executable, "-m", "bench.worker_farm", "--ports", ",".join(map(str, ports))],
                       env=dict(sim_env))
    pending = list(ports)

    def all_idle() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        while pending:
            response = httpx.get(f"http://127.0.0.1:{pending[0]}/health", timeout=2.0)
            if response.json().get("worker_status") != "idle":
                return False
            pending.pop(0)
        return True

    wait_until(all_idle, timeout, f"{len(ports)} simulated workers idle", interval=0.2)
    return proc


def gateway_workers(port: int) -> list[dict]:
    return httpx.get(f"http://127.0.0.1:{port}/workers", timeout=5.0).json().get("workers", [])


def start_gateway(group: ProcessGroup, port: int, worker_ports: Sequence[int], config: dict | None = None,
                  name: str = "gateway", timeout: float = 120.0, extra_args: Sequence[str] = ()) -> Managed:
    """The real gateway in front of `worker_ports`; returns once it sees every worker idle."""
    workdir = group.log_dir / name
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.json"
    config_file.write_text(json.dumps(config or {}))
    argv = [console_script("omnikube-gateway"), "--http", "--host", "127.0.0.1", "--port", str(port),
            "--config", str(config_file), "--data-dir", str(workdir / "data")]
    if worker_ports:
        argv += ["--workers", ",".join(f"127.0.0.1:{p}" for p in worker_ports)]
    proc = group.start(name, argv + list(extra_args), cwd=workdir)

    def all_idle() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        workers = gateway_workers(port)
        return len(workers) == len(worker_ports) and all(w.get("status") == "idle" for w in workers)

    wait_until(all_idle, timeout, f"gateway sees {len(worker_ports)} idle workers", interval=0.2)
    return proc
